"""The Postgres trigger installed on a historical table, through django-pgtrigger.

One trigger per channel, ``AFTER INSERT`` on the ``HistoricalX`` table, firing only for the history
types the channel's listeners subscribe to. It builds a small payload that points at the
historical row (never its columns, so it stays far below NOTIFY's 8000-byte limit), stores it for
lockable channels (in ``pgpubsub_simplehistory_notification``), and NOTIFYs. ``makemigrations``
writes it into the app's migrations and ``migrate`` installs it, like every django-pgtrigger
trigger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pgtrigger

from . import _pgpubsub
from .history_models import migration_apps

if TYPE_CHECKING:
    from .channel import HistoryTriggerChannel

_ALL_TYPES = ("+", "-", "~")

#: Where lockable channels store their notifications (``models.Notification``).
QUEUE_TABLE = "pgpubsub_simplehistory_notification"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _compact(sql: str) -> str:
    return "\n".join(line.strip() for line in sql.splitlines() if line.strip())


class HistoryNotify(pgtrigger.Trigger):
    """AFTER INSERT trigger on a history table that publishes a pointer to the new record."""

    when = pgtrigger.After
    operation = pgtrigger.Insert

    def __init__(self, channel: type[HistoryTriggerChannel]) -> None:
        self.channel = channel
        super().__init__(name=channel.listen_safe_name())

    def get_condition(self, model: Any) -> pgtrigger.Condition | None:  # type: ignore[override]
        types = sorted(self.channel.history_types())
        if not types or tuple(types) == _ALL_TYPES:
            return None
        return pgtrigger.Condition(f"NEW.history_type IN ({', '.join(_literal(t) for t in types)})")

    def get_declare(self, model: Any) -> list[tuple[str, str]]:
        return [("payload", "jsonb"), ("notification_id", "bigint")]

    def get_func(self, model: Any) -> str:
        tracked = self.channel.tracked_model()
        history_pk = model._meta.pk.column
        object_id = model._meta.get_field(tracked._meta.pk.name).column
        apps = migration_apps(tracked)
        channel = _literal(str(self.name))
        build = f"""
            payload := jsonb_build_object(
                'app', {_literal(str(tracked._meta.app_label))},
                'model', {_literal(str(tracked._meta.object_name))},
                'history_model', {_literal(model._meta.label)},
                'history_id', NEW.{_ident(history_pk)},
                'history_type', NEW.history_type,
                'object_id', NEW.{_ident(object_id)},
                'migration', (
                    SELECT max(id) FROM django_migrations
                    WHERE app IN ({", ".join(_literal(a) for a in apps)})
                ),
                'context', COALESCE(
                    NULLIF(current_setting({_literal(_pgpubsub.CONTEXT_SETTING)}, true), ''),
                    '{{}}'
                )::jsonb
            );
        """
        if self.channel.lock_notifications:
            notify = f"""
                INSERT INTO {_ident(QUEUE_TABLE)} (
                    channel, model, history_model, history_id, history_type, object_key,
                    migration, context, created_at, state, attempts, available_at,
                    last_error, last_traceback
                ) VALUES (
                    {channel}, payload->>'app' || '.' || (payload->>'model'),
                    payload->>'history_model', payload->>'history_id', NEW.history_type,
                    payload->>'object_id', (payload->>'migration')::integer,
                    payload->'context', now(), 'pending', 0, now(), '', ''
                ) RETURNING id INTO notification_id;
                PERFORM pg_notify(
                    {channel},
                    (payload || jsonb_build_object('notification_id', notification_id))::text
                );
            """
        else:
            notify = f"PERFORM pg_notify({channel}, payload::text);"
        return _compact(build + notify + "RETURN NULL;")
