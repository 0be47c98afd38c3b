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
    -- A doorbell: the workers claim from the table. An empty payload is sent once per
    -- transaction and channel (Postgres folds identical notifications), whatever the context.
    PERFORM pg_notify(p_listen_name, '');
    RETURN v_id;
END
$$;
