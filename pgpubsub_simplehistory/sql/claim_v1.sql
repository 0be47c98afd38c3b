-- pgpubsub_simplehistory_claim_v1: lock and return up to p_batch pending notifications of the
-- channels p_listen_names that are due, oldest first, at most one per object: a notification is
-- not claimed while an earlier one of the same object is pending (or parked, on the channels
-- p_blocking, whose parked notifications hold back later changes).
-- A function so that its planner settings apply to it alone: on a queue table without
-- statistics (new, or emptied since the last ANALYZE) the planner otherwise estimates a handful
-- of rows and sorts the whole backlog for every claim. PL/pgSQL caches the plan per session.
CREATE OR REPLACE FUNCTION pgpubsub_simplehistory_claim_v1(
    p_listen_names text[], p_blocking text[], p_batch integer
)
RETURNS SETOF pgpubsub_simplehistory_notification LANGUAGE plpgsql VOLATILE
SET enable_sort = off SET enable_bitmapscan = off
AS $$
BEGIN
    RETURN QUERY
    SELECT n.* FROM pgpubsub_simplehistory_notification n
    WHERE n.state = 'pending'
      AND n.listen_name = ANY(p_listen_names)
      AND n.available_at <= now()
      AND NOT EXISTS (
        SELECT 1 FROM pgpubsub_simplehistory_notification e
        WHERE e.listen_name = n.listen_name AND e.object_id = n.object_id AND e.id < n.id
          AND (e.state = 'pending' OR (e.state = 'parked' AND e.listen_name = ANY(p_blocking)))
      )
    ORDER BY n.id
    LIMIT p_batch
    FOR UPDATE OF n SKIP LOCKED;
END
$$;
