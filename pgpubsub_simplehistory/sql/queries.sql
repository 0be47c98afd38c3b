-- Every statement this package runs on its queue table, pgpubsub_simplehistory_notification
-- (models.Notification). queue.py runs them by name. Format of an entry:
--   -- name --
--   -- what it does (one or more comment lines)
--   the statement, with %(name)s parameters

-- claim --
-- Lock up to %(batch)s due notifications of some channels, oldest first, at most one per
-- object (see claim_v1.sql); call inside the transaction that settles them.
SELECT * FROM pgpubsub_simplehistory_claim_v1(%(listen_names)s, %(blocking)s, %(batch)s)

-- delete_done --
-- Delete notifications whose listeners ran, in the transaction in which their writes commit.
DELETE FROM pgpubsub_simplehistory_notification WHERE id = ANY(%(ids)s)

-- lock_pending --
-- Lock one notification again if it is still pending (settling a rolled-back first one).
SELECT * FROM pgpubsub_simplehistory_notification
WHERE id = %(id)s AND state = 'pending'
FOR UPDATE

-- settle_failure --
-- Record a failed attempt: retry after %(delay)s seconds on the database's clock, or park.
UPDATE pgpubsub_simplehistory_notification
SET attempts = %(attempts)s,
    last_error = %(error)s,
    last_traceback = %(traceback)s,
    state = %(state)s,
    available_at = now() + %(delay)s * interval '1 second'
WHERE id = %(id)s
RETURNING available_at

-- make_pending --
-- Make parked notifications pending again, due now, with their attempts reset.
UPDATE pgpubsub_simplehistory_notification
SET state = 'pending', attempts = 0, available_at = now()
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
       min(created_at) FILTER (WHERE state = 'pending')
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
