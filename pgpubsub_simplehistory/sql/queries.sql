-- Every statement this package runs on its queue table, pgpubsub_simplehistory_notification
-- (models.Notification). queue.py runs them by name. Format of an entry:
--   -- name --
--   -- what it does (one or more comment lines)
--   the statement, with %(name)s parameters

-- claim --
-- Claim up to %(batch)s due notifications of some channels, oldest first, at most one per
-- object, leased to %(worker)s: the attempt is counted and committed (see claim_v1.sql).
-- First, in the same round trip, take the awake keys (29555: waking.AWAKE_CLASS, which
-- sql/enqueue_v1.sql probes) of the channels %(wake)s, each unless a writer probes it at this
-- instant; a session-level lock, held after the statement. Each row has the names whose key
-- was taken (`woke`); one row of NULLs but `woke` when nothing was claimed.
WITH taken AS MATERIALIZED (
    SELECT coalesce(array_agg(name), '{}') AS woke FROM unnest(%(wake)s::text[]) AS name
    WHERE pg_try_advisory_lock_shared(29555, hashtext(name))
)
SELECT taken.woke, claimed.* FROM taken
LEFT JOIN LATERAL pgpubsub_simplehistory_claim_v1(
    %(listen_names)s, %(blocking)s, %(batch)s, %(worker)s, %(lease_seconds)s
) AS claimed ON true

-- take --
-- First statement of a notification's transaction: delete it if %(worker)s still holds it. The
-- row stays locked until the commit (done) or the rollback (the notification comes back).
-- Returns the lag: seconds from the change's insert to now, on the database's clock. The
-- transaction's commit does not wait for the WAL flush: the worker flushes once per batch
-- before it reports anything (draining.py, group commit).
DELETE FROM pgpubsub_simplehistory_notification
WHERE id = %(id)s AND leased_by = %(worker)s AND state = 'pending'
RETURNING extract(epoch FROM now() - created_at), set_config('synchronous_commit', 'off', true)

-- take_batch --
-- Last statement of a batch run in one transaction (draining.py, _run_together): delete the
-- notifications whose listeners ran, if %(worker)s still holds every one of them (the caller
-- rolls back otherwise). Returns each one's seconds since its change was stored, now.
DELETE FROM pgpubsub_simplehistory_notification
WHERE id = ANY(%(ids)s) AND leased_by = %(worker)s AND state = 'pending'
RETURNING id, extract(epoch FROM clock_timestamp() - created_at),
    set_config('synchronous_commit', 'off', true)

-- settle_failure --
-- Record a failed attempt (already counted by the claim) and end the lease: due again after
-- %(delay)s seconds on the database's clock, or parked.
UPDATE pgpubsub_simplehistory_notification
SET last_error = %(error)s,
    last_traceback = %(traceback)s,
    state = %(state)s,
    available_at = now() + %(delay)s * interval '1 second',
    leased_by = '',
    leased_until = NULL
WHERE id = %(id)s AND leased_by = %(worker)s AND state = 'pending'
RETURNING attempts, available_at

-- release --
-- Give back notifications claimed but not started (a stop, a slow listener): the attempt the
-- claim counted is taken back.
UPDATE pgpubsub_simplehistory_notification
SET attempts = greatest(attempts - 1, 0), leased_by = '', leased_until = NULL
WHERE id = ANY(%(ids)s) AND leased_by = %(worker)s AND state = 'pending'

-- extend_leases --
-- Extend the leases of notifications %(worker)s still holds (the rows run in a batch transaction
-- whose listener runs long: they are not locked until its end, a reap would take them).
UPDATE pgpubsub_simplehistory_notification
SET leased_until = now() + %(lease)s * interval '1 second'
WHERE id = ANY(%(ids)s) AND leased_by = %(worker)s AND state = 'pending'

-- expired_leases --
-- Notifications of a channel whose lease ran out: their worker died (or lost its session)
-- while it held them. Locked until the reap below (same transaction); rows still locked (a
-- listener of a live worker running long) are skipped.
SELECT id, attempts FROM pgpubsub_simplehistory_notification
WHERE leased_until < now() AND listen_name = %(listen_name)s AND state = 'pending'
FOR UPDATE SKIP LOCKED

-- reap --
-- End those leases: each was an attempt, due again after its delay (%(delays)s, seconds, on the
-- database's clock) or parked (a NULL delay), as the channel's RetryPolicy decided.
UPDATE pgpubsub_simplehistory_notification q
SET leased_by = '',
    leased_until = NULL,
    last_error = %(error_prefix)s || q.leased_by || ' (attempt ' || q.attempts || ')',
    last_traceback = '',
    state = CASE WHEN d.delay IS NULL THEN 'parked' ELSE 'pending' END,
    available_at = now() + coalesce(d.delay, 0) * interval '1 second'
FROM unnest(%(ids)s::bigint[], %(delays)s::float8[]) AS d(id, delay)
WHERE q.id = d.id
RETURNING q.*

-- pending_of_object --
-- The later pending notifications of one object of a channel, oldest first.
SELECT * FROM pgpubsub_simplehistory_notification
WHERE listen_name = %(listen_name)s AND object_id = %(object_id)s AND id > %(after)s
  AND state = 'pending'
ORDER BY id

-- park --
-- Park pending notifications that can never be resolved, with their error.
UPDATE pgpubsub_simplehistory_notification
SET state = 'parked', last_error = %(error)s, last_traceback = '', leased_by = '',
    leased_until = NULL
WHERE id = ANY(%(ids)s) AND state = 'pending'
RETURNING id

-- listen_names --
-- The distinct listen names in the queue, read off the per-object index (a loose index scan:
-- one probe per name, however many rows).
WITH RECURSIVE names AS (
    SELECT min(listen_name) AS name FROM pgpubsub_simplehistory_notification
    UNION ALL
    SELECT (
        SELECT min(listen_name) FROM pgpubsub_simplehistory_notification
        WHERE listen_name > names.name
    )
    FROM names WHERE names.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL

-- models_of --
-- The history models a listen name's pending notifications point at.
SELECT DISTINCT history_model, model FROM pgpubsub_simplehistory_notification
WHERE listen_name = %(listen_name)s AND state = 'pending'

-- park_history_model --
-- Park every pending notification of a listen name and history model, with an error.
UPDATE pgpubsub_simplehistory_notification
SET state = 'parked', last_error = %(error)s, last_traceback = '', leased_by = '',
    leased_until = NULL
WHERE listen_name = %(listen_name)s AND history_model = %(history_model)s AND state = 'pending'
  AND leased_until IS NULL

-- contexts --
-- The contexts of the stored notifications of some history records (for replays).
SELECT history_id, context FROM pgpubsub_simplehistory_notification
WHERE listen_name = ANY(%(listen_names)s) AND history_model = %(history_model)s
  AND history_id = ANY(%(history_ids)s) AND context <> '{}'::jsonb

-- make_pending --
-- Make parked notifications pending again, due now, with their attempts reset.
UPDATE pgpubsub_simplehistory_notification
SET state = 'pending', attempts = 0, available_at = now(), leased_by = '', leased_until = NULL
WHERE id = ANY(%(ids)s) AND state = 'parked'

-- purge --
-- Delete parked notifications (their historical records stay).
DELETE FROM pgpubsub_simplehistory_notification
WHERE id = ANY(%(ids)s) AND state = 'parked'

-- channel_counts --
-- Per listen name: pending, parked, and when the oldest pending one was stored.
SELECT listen_name,
       count(*) FILTER (WHERE state = 'pending'),
       count(*) FILTER (WHERE state = 'parked'),
       min(created_at) FILTER (WHERE state = 'pending'),
       count(*) FILTER (WHERE leased_until IS NOT NULL)
FROM pgpubsub_simplehistory_notification
GROUP BY listen_name
ORDER BY listen_name

-- pending_by_migration --
-- Pending notifications per listen name and migration state at change time, with the
-- migration's name and the oldest one's time.
SELECT n.listen_name, m.id, m.app, m.name, n.count, n.oldest
FROM (
    SELECT listen_name, migration_id_at_change, count(*) AS count, min(created_at) AS oldest
    FROM pgpubsub_simplehistory_notification
    WHERE state = 'pending'
    GROUP BY listen_name, migration_id_at_change
) n
LEFT JOIN django_migrations m ON m.id = n.migration_id_at_change
ORDER BY n.listen_name, m.id NULLS FIRST

-- queue_overview --
-- Per listen name, for the admin dashboard: pending, in flight (leased to a worker), waiting for
-- retry (failed before, due later, not leased), parked, the oldest pending one's time, and held
-- back (pending behind an earlier parked notification of their object, on the channels
-- %(blocking)s whose parked notifications block their object). Two grouped scans.
WITH counts AS (
    SELECT listen_name,
           count(*) FILTER (WHERE state = 'pending') AS pending,
           count(*) FILTER (WHERE state = 'pending' AND leased_until IS NOT NULL) AS in_flight,
           count(*) FILTER (
               WHERE state = 'pending' AND leased_until IS NULL AND attempts > 0
                 AND available_at > now()
           ) AS waiting,
           count(*) FILTER (WHERE state = 'parked') AS parked,
           min(created_at) FILTER (WHERE state = 'pending') AS oldest_pending
    FROM pgpubsub_simplehistory_notification
    GROUP BY listen_name
), first_parked AS (
    SELECT listen_name, object_id, min(id) AS first_id
    FROM pgpubsub_simplehistory_notification
    WHERE state = 'parked' AND listen_name = ANY(%(blocking)s)
    GROUP BY listen_name, object_id
), held AS (
    SELECT n.listen_name, count(*) AS held_back
    FROM first_parked p
    JOIN pgpubsub_simplehistory_notification n
      ON n.listen_name = p.listen_name AND n.object_id = p.object_id AND n.id > p.first_id
    WHERE n.state = 'pending'
    GROUP BY n.listen_name
)
SELECT c.listen_name, c.pending, c.in_flight, c.waiting, c.parked, c.oldest_pending,
       coalesce(h.held_back, 0)
FROM counts c LEFT JOIN held h USING (listen_name)
ORDER BY c.listen_name

-- held_back_of --
-- Of the pending notifications %(ids)s, those held back on the channels %(blocking)s: with the
-- first earlier parked notification of their object (the one to retry or purge first). One
-- probe of the per-object index each.
SELECT n.id, p.id, n.object_id
FROM pgpubsub_simplehistory_notification n
CROSS JOIN LATERAL (
    SELECT e.id FROM pgpubsub_simplehistory_notification e
    WHERE e.listen_name = n.listen_name AND e.object_id = n.object_id AND e.id < n.id
      AND e.state = 'parked'
    ORDER BY e.id
    LIMIT 1
) p
WHERE n.id = ANY(%(ids)s) AND n.state = 'pending' AND n.listen_name = ANY(%(blocking)s)

-- held_back_by_parked --
-- The parked notifications that hold back pending ones (channels %(blocking)s): per object its
-- first parked notification and how many pending ones wait behind it, the most first.
SELECT p.listen_name, p.first_id, p.object_id, count(*) AS held_back
FROM (
    SELECT listen_name, object_id, min(id) AS first_id
    FROM pgpubsub_simplehistory_notification
    WHERE state = 'parked' AND listen_name = ANY(%(blocking)s)
    GROUP BY listen_name, object_id
) p
JOIN pgpubsub_simplehistory_notification n
  ON n.listen_name = p.listen_name AND n.object_id = p.object_id AND n.id > p.first_id
WHERE n.state = 'pending'
GROUP BY p.listen_name, p.first_id, p.object_id
ORDER BY held_back DESC, p.first_id
LIMIT %(limit)s

-- parked_errors --
-- Parked notifications per listen name and message (the first line of the last error, at most
-- 200 characters), the most frequent first, with the latest one's id.
SELECT listen_name, left(split_part(last_error, E'\n', 1), 200) AS message, count(*),
       max(id)
FROM pgpubsub_simplehistory_notification
WHERE state = 'parked'
GROUP BY listen_name, message
ORDER BY count(*) DESC, message, listen_name
LIMIT %(limit)s

-- held_back_counts --
-- Per listen name (of the channels %(blocking)s), the pending notifications behind an earlier
-- parked notification of their object. One scan for the parked rows, then index probes.
SELECT n.listen_name, count(*)
FROM (
    SELECT listen_name, object_id, min(id) AS first_id
    FROM pgpubsub_simplehistory_notification
    WHERE state = 'parked' AND listen_name = ANY(%(blocking)s)
    GROUP BY listen_name, object_id
) p
JOIN pgpubsub_simplehistory_notification n
  ON n.listen_name = p.listen_name AND n.object_id = p.object_id AND n.id > p.first_id
WHERE n.state = 'pending'
GROUP BY n.listen_name

-- store_record --
-- Store a record a durable subscription could not deliver in place (it failed, or an earlier
-- change of its object is stored): the queue retries it, in per-object order.
INSERT INTO pgpubsub_simplehistory_notification (
    listen_name, model, history_model, history_id, history_type, object_id,
    migration_id_at_change, context, created_at, state, attempts, available_at,
    last_error, last_traceback, leased_by
) VALUES (
    %(listen_name)s, %(model)s, %(history_model)s, %(history_id)s, %(history_type)s,
    %(object_id)s, NULL, '{}'::jsonb, clock_timestamp(), %(state)s, %(attempts)s,
    now() + %(delay)s * interval '1 second', %(error)s, %(traceback)s, ''
)

-- stored_objects --
-- The objects of a listen name with a stored notification that holds back their later changes.
SELECT DISTINCT object_id FROM pgpubsub_simplehistory_notification
WHERE listen_name = %(listen_name)s
  AND (state = 'pending' OR (state = 'parked' AND %(parked_blocks)s))

-- stored_counts --
-- Per listen name among %(listen_names)s: how many notifications are stored (pending or parked).
SELECT listen_name, count(*) FROM pgpubsub_simplehistory_notification
WHERE listen_name = ANY(%(listen_names)s) AND state IN ('pending', 'parked')
GROUP BY listen_name

-- flush --
-- A transaction that commits durably: its commit waits for the WAL flush, which makes every
-- earlier commit of the batch durable too (the WAL is flushed in order).
SELECT pg_current_xact_id()
