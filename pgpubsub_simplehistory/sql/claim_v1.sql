-- pgpubsub_simplehistory_claim_v1: claim up to p_batch pending notifications of the channels
-- p_listen_names that are due and not leased, the soonest due first (then the oldest), at most
-- one per object: one is not claimed while an earlier one of the same object is pending
-- (claimed or not), or parked on the channels p_blocking, whose parked notifications hold back
-- later changes. Rows are returned in no particular order (queue.claim sorts them by id).
-- Claiming counts the attempt and leases the row to p_worker for p_lease_seconds, committed
-- before any listener runs: a worker that dies while running it leaves a lease that runs out
-- (reaped by queries.sql:reap). The commit does not wait for the WAL flush: a server crash may
-- lose the count of an attempt, never a notification.
-- A function so that its planner settings apply to it alone. They leave the planner one shape
-- whatever the statistics say: the claim index in its order, a probe of the per-object index
-- per candidate, then the claimed rows updated by their address (no sort, no hash, no join,
-- no sequential scan, no index walked whole: on a queue table without statistics, or
-- analyzed while empty, as autovacuum leaves a drained queue, the planner otherwise estimates
-- a row or so and sorts, hashes, joins or walks the whole backlog for every claim, until the
-- next ANALYZE). So one generic plan per session serves every claim: custom
-- plans (PL/pgSQL's default, while they look cheaper) meant planning the claim again on every
-- call once another channel's backlog skewed the statistics (docs/performance.md,
-- "Isolation"). A generic plan does not know the batch's size and costs a claim as if it took
-- a tenth of the backlog: with a large one, over JIT's threshold, which then compiled every
-- claim (a quarter of a second at 1,000,000 stored): no JIT.
CREATE OR REPLACE FUNCTION pgpubsub_simplehistory_claim_v1(
    p_listen_names text[],
    p_blocking text[],
    p_batch integer,
    p_worker text,
    p_lease_seconds double precision
)
RETURNS SETOF pgpubsub_simplehistory_notification LANGUAGE plpgsql VOLATILE
SET enable_sort = off SET enable_bitmapscan = off SET enable_seqscan = off
SET enable_hashjoin = off SET enable_mergejoin = off SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
DECLARE
    v_name text;
    v_left integer := p_batch;
    v_count integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    -- One channel after the other, each through its own part of the claim index: another
    -- channel's backlog, and rows waiting for a retry (due later), are never walked.
    FOREACH v_name IN ARRAY p_listen_names LOOP
        EXIT WHEN v_left <= 0;
        RETURN QUERY
        WITH claimed AS (
            SELECT n.ctid FROM pgpubsub_simplehistory_notification n
            WHERE n.listen_name = v_name
              AND n.state = 'pending'
              AND n.leased_until IS NULL
              AND n.available_at <= now()
              AND NOT EXISTS (
                SELECT 1 FROM pgpubsub_simplehistory_notification e
                WHERE e.listen_name = v_name AND e.object_id = n.object_id
                  -- an earlier id of the object, as a row comparison that only the per-object
                  -- index serves: never a walk of the primary key's earlier ids per candidate
                  AND (e.object_id, e.id) < (n.object_id, n.id)
                  AND (e.state = 'pending' OR (e.state = 'parked' AND v_name = ANY(p_blocking)))
                -- a fence: a probe of the per-object index by listen name, object and id for
                -- each candidate, never a join that could walk the channel's rows for each one
                OFFSET 0
              )
            ORDER BY n.available_at, n.id
            LIMIT v_left
            FOR UPDATE OF n SKIP LOCKED
        )
        UPDATE pgpubsub_simplehistory_notification q
        SET attempts = q.attempts + 1,
            leased_by = p_worker,
            leased_until = now() + p_lease_seconds * interval '1 second'
        -- the claimed rows by their address (locked: it cannot change before this update), a
        -- TID scan whatever the statistics: never a join, nor an index walk
        WHERE q.ctid = ANY(ARRAY(SELECT ctid FROM claimed))
        RETURNING q.*;
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_left := v_left - v_count;
    END LOOP;
END
$$;
