"""The trigger on a history table: every SQL statement it runs is rendered here.

One trigger per channel, ``AFTER INSERT`` on the ``HistoricalX`` table, for the history types the
channel declares (``HistoryTriggerChannel.history_types``; never for what listeners subscribe
to, so that adding a listener cannot silently change what is stored). It points at the new
record, never copies its columns:

* a lockable channel calls ``pgpubsub_simplehistory_enqueue_v1`` (``sql/enqueue_v1.sql``, owned by
  ``queue``), which stores the notification and wakes the workers, so that the queue table can
  change under a trigger already migrated into an application;
* any other channel NOTIFYs the pointer (at most once, as in django-pgpubsub).

``makemigrations`` writes the trigger into the application's migrations and ``migrate``
installs it, like every django-pgtrigger trigger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pgtrigger

from ._pgpubsub import CONTEXT_SETTING
from ._sql import identifier, literal
from .history_models import migration_apps, numbered

if TYPE_CHECKING:
    from .channels import HistoryTriggerChannel

_ALL_TYPES = ("+", "-", "~")
#: Advisory-lock key space of the marks of writers of followed history tables (the table's key
#: is hashtext(table name)); 29555, 29557 and 29558 are the wake-up protocol's (waking.py).
MARK_CLASS = 29556
#: The longest NOTIFY payload Postgres accepts (bytes), below its 8000-byte limit.
NOTIFY_LIMIT = 7999


def _compact(sql: str) -> str:
    return "\n".join(line.strip() for line in sql.splitlines() if line.strip())


class HistoryOrder(pgtrigger.Trigger):
    """BEFORE INSERT trigger on a history table: changes of one object get their history ids
    (and so their notifications) in the order they commit.

    An update or a delete already holds the object's row lock when its history record is
    written; an m2m change does not (Django's through-table insert takes only a key-share lock),
    nor does a history record written by hand. This trigger takes the row lock for them (a no-op
    when the transaction holds it already), so that concurrent writers of one object wait for
    each other, and numbers the record after the lock is granted. Inserts need neither: no other
    transaction can see the new object yet.

    With ``marked`` (a model that durable subscriptions follow) it also fires for inserts, and
    before numbering the record it takes a shared transaction lock on the table's key: the
    mark by which a subscription knows which history ids may still be uncommitted
    (``subscriptions.Horizon``).
    """

    name = "pgpubsub_simplehistory_order"
    when = pgtrigger.Before
    operation = pgtrigger.Insert

    def __init__(self, tracked: type[Any], marked: bool = False) -> None:
        self.tracked = tracked
        self.marked = marked
        super().__init__(name=self.name)

    def get_condition(self, model: Any) -> pgtrigger.Condition | None:  # type: ignore[override]
        return None if self.marked else pgtrigger.Condition("NEW.history_type <> '+'")

    def get_func(self, model: Any) -> str:
        tracked = self.tracked
        pk = model._meta.pk
        return render_order(
            table=str(tracked._meta.db_table),
            pk_column=str(tracked._meta.pk.column),
            object_id_column=str(model._meta.get_field(tracked._meta.pk.name).column),
            history_id_column=str(pk.column),
            numbered=numbered(model),
            marked=self.marked,
        )


def render_order(
    *,
    table: str,
    pk_column: str,
    object_id_column: str,
    history_id_column: str,
    numbered: bool,
    marked: bool = False,
) -> str:
    """The body of the ordering trigger of one history table."""
    renumber = ""
    mark = ""
    if marked:
        mark = f"PERFORM pg_advisory_xact_lock_shared({MARK_CLASS}, hashtext(TG_TABLE_NAME));"
    if numbered:
        renumber = (
            f"NEW.{identifier(history_id_column)} := nextval(pg_get_serial_sequence("
            f"quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME), "
            f"{literal(history_id_column)}));"
        )
    lock = (
        f"PERFORM 1 FROM {identifier(table)}\n"
        f"WHERE {identifier(pk_column)} = NEW.{identifier(object_id_column)}\n"
        "FOR NO KEY UPDATE;"
    )
    if marked:  # inserts too: the mark must come before the number
        lock = f"IF NEW.history_type <> '+' THEN\n{lock}\nEND IF;"
    return _compact(
        f"""
        {lock}
        {mark}
        {renumber}
        RETURN NEW;
        """
    )


class HistoryRemoval(pgtrigger.Trigger):
    """AFTER DELETE statement trigger on a history table that durable subscriptions follow:
    counts the records a cleanup (``clean_old_history``, ``clean_duplicate_history``,
    ``cascade_delete_history``, raw SQL) removed above a subscription's position, before it
    delivered them, so that the subscription stops and says so instead of skipping them."""

    name = "pgpubsub_simplehistory_removal"
    when = pgtrigger.After
    operation = pgtrigger.Delete
    level = pgtrigger.Statement
    referencing = pgtrigger.Referencing(old="removed")  # type: ignore[no-untyped-call]

    def __init__(self) -> None:
        super().__init__(name=self.name)

    def get_func(self, model: Any) -> str:
        pk = identifier(str(model._meta.pk.column))
        return _compact(
            f"""
            UPDATE pgpubsub_simplehistory_position p
            SET removed_ahead = p.removed_ahead + ahead.n
            FROM (
                SELECT p2.id, count(*) AS n
                FROM pgpubsub_simplehistory_position p2
                JOIN removed r ON r.{pk} > p2.position
                WHERE p2.history_model = {literal(model._meta.label)}
                GROUP BY p2.id
            ) ahead
            WHERE p.id = ahead.id;
            RETURN NULL;
            """
        )


class HistoryNotify(pgtrigger.Trigger):
    """AFTER INSERT trigger on a history table that publishes a pointer to the new record."""

    when = pgtrigger.After
    operation = pgtrigger.Insert

    def __init__(self, channel: type[HistoryTriggerChannel]) -> None:
        self.channel = channel
        super().__init__(name=channel.listen_safe_name())

    def get_condition(self, model: Any) -> pgtrigger.Condition | None:  # type: ignore[override]
        types = sorted(set(self.channel.history_types))
        if not types or tuple(types) == _ALL_TYPES:
            return None
        return pgtrigger.Condition(f"NEW.history_type IN ({', '.join(literal(t) for t in types)})")

    def get_declare(self, model: Any) -> list[tuple[str, str]]:
        return declare(self.channel.lock_notifications)

    def get_func(self, model: Any) -> str:
        tracked = self.channel.tracked_model()
        return render(
            listen_name=str(self.name),
            lockable=self.channel.lock_notifications,
            model=str(tracked._meta.label),
            history_model=str(model._meta.label),
            history_id_column=str(model._meta.pk.column),
            object_id_column=str(model._meta.get_field(tracked._meta.pk.name).column),
            apps=migration_apps(tracked),
        )


def declare(lockable: bool) -> list[tuple[str, str]]:
    """The trigger function's variables."""
    return [] if lockable else [("payload", "jsonb")]


def render(
    *,
    listen_name: str,
    lockable: bool,
    model: str,
    history_model: str,
    history_id_column: str,
    object_id_column: str,
    apps: list[str],
) -> str:
    """The body of the trigger function of one channel on one history table."""
    history_id = f"NEW.{identifier(history_id_column)}"
    object_id = f"NEW.{identifier(object_id_column)}"
    in_apps = ", ".join(literal(a) for a in apps)
    migration = f"(SELECT max(id) FROM django_migrations WHERE app IN ({in_apps}))"
    context = f"current_setting({literal(CONTEXT_SETTING)}, true)"
    if lockable:
        return _compact(
            f"""
            PERFORM pgpubsub_simplehistory_enqueue_v1(
                {literal(listen_name)}, {literal(model)}, {literal(history_model)},
                {history_id}::text, NEW.history_type, {object_id}::text,
                {migration}, {context}
            );
            RETURN NULL;
            """
        )
    app, _, object_name = model.partition(".")
    return _compact(
        f"""
        payload := jsonb_build_object(
            'app', {literal(app)},
            'model', {literal(object_name)},
            'history_model', {literal(history_model)},
            'history_id', {history_id},
            'history_type', NEW.history_type,
            'object_id', {object_id},
            'migration_id_at_change', {migration},
            'context', COALESCE(NULLIF({context}, ''), '{{}}')::jsonb
        );
        IF octet_length(payload::text) > {NOTIFY_LIMIT} THEN
            RAISE EXCEPTION USING
                ERRCODE = 'string_data_right_truncation',
                MESSAGE = format(
                    'pgpubsub_simplehistory: the notification of %s on channel %s is %s bytes, '
                    'over the %s bytes NOTIFY allows (its context is %s bytes)',
                    {literal(model)}, {literal(listen_name)}, octet_length(payload::text),
                    {NOTIFY_LIMIT}, octet_length((payload->'context')::text)
                ),
                HINT = 'Make the channel lockable (lock_notifications = True: its notifications '
                    'are stored, whatever their size) or set a smaller notification context.';
        END IF;
        PERFORM pg_notify({literal(listen_name)}, payload::text);
        RETURN NULL;
        """
    )
