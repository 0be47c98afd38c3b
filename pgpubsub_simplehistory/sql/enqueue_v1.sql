-- pgpubsub_simplehistory_enqueue_v1: store one change of a lockable history channel and ring
-- the doorbell of the workers listening on its channel. The history triggers call it (trigger.py): it is the
-- only INSERT into the queue, so that the queue's columns can change under triggers already
-- migrated into applications. A v1 keeps its signature; a change of signature is a v2.
CREATE OR REPLACE FUNCTION pgpubsub_simplehistory_enqueue_v1(
    p_listen_name text,
    p_model text,
    p_history_model text,
    p_history_id text,
    p_history_type text,
    p_object_id text,
    p_migration_id_at_change bigint,
    p_context text
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_context jsonb := COALESCE(NULLIF(p_context, ''), '{}')::jsonb;
    v_id bigint;
BEGIN
    INSERT INTO pgpubsub_simplehistory_notification (
        listen_name, model, history_model, history_id, history_type, object_id,
        migration_id_at_change, context, created_at, state, attempts, available_at,
        last_error, last_traceback, leased_by
    ) VALUES (
        p_listen_name, p_model, p_history_model, p_history_id, p_history_type, p_object_id,
        p_migration_id_at_change, v_context, clock_timestamp(), 'pending', 0, now(), '', '', ''
    ) RETURNING id INTO v_id;
    -- The doorbell, rung only when no worker of the channel is awake: an awake worker holds a
    -- shared advisory lock on the channel's key (listening.py) and keeps claiming until the
    -- queue is empty (and, falling asleep, until no writer is in flight), so a writer then
    -- skips NOTIFY and its commit does not take the lock NOTIFY serializes commits on. The probe takes the key exclusively and releases it at
    -- once: it never waits and holds nothing. The payload is empty: the workers claim from the
    -- table, and Postgres folds identical notifications of a transaction into one.
    -- A writer in flight: held until this transaction ends (see listening.py, falling asleep).
    -- Nobody listening (no worker connected: its listen session holds the key 29558 shared):
    -- no doorbell either; a worker sweeps when it connects, and awaits the writers in flight.
    PERFORM pg_advisory_xact_lock_shared(29557, hashtext(p_listen_name));
    IF pg_try_advisory_lock(29555, hashtext(p_listen_name)) THEN
        PERFORM pg_advisory_unlock(29555, hashtext(p_listen_name));
        IF pg_try_advisory_lock(29558, hashtext(p_listen_name)) THEN
            PERFORM pg_advisory_unlock(29558, hashtext(p_listen_name));
        ELSE
            PERFORM pg_notify(p_listen_name, '');
        END IF;
    END IF;
    RETURN v_id;
END
$$;
