"""Resolution: a notification payload or a historical record → ``old``/``new`` instances.

Pure with respect to processing state: used by the listener and by replay alike. Everything is
read through *today's* models: the historical table has been migrated together with the model, so a
pointer written before a migration resolves to an instance of the model as it is now.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import connections, models

from . import _prepared
from ._fetch import fetch_instances, fetch_tagged
from ._pgpubsub import channel_by_listen_name
from .channel import is_history_channel
from .event import HistoryEvent, migration_id_as_of
from .exceptions import (
    ChannelConfigurationError,
    InvalidPayload,
    MissingHistoryRecord,
    UnknownModel,
)
from .models import Notification
from .payload import HistoryPayload

if TYPE_CHECKING:
    from .channel import HistoryTriggerChannel


@dataclass(frozen=True)
class ResolvedChange:
    """One change, ready to be handed to listeners."""

    channel: type[HistoryTriggerChannel]
    old: models.Model | None
    new: models.Model | None
    history: Any
    event: HistoryEvent

    @property
    def context(self) -> dict[str, Any]:
        return self.event.context


def resolve(
    channel: type[HistoryTriggerChannel],
    payload: HistoryPayload,
    *,
    using: str = "default",
    replayed: bool = False,
    records: dict[Any, Any] | None = None,
    previous: dict[Any, Any] | None = None,
) -> ResolvedChange:
    """Load the historical record a payload points at and build the change from it.

    ``records`` may hold records already loaded (by primary key), to save a query per change;
    ``previous`` the record before each of them, by the later record's primary key (``None``:
    there is none), as the listener preloads them for a batch.

    Raises:
        UnknownModel: the payload's app is not installed.
        InvalidPayload: the payload belongs to another channel's model, or its id is malformed.
        MissingHistoryRecord: the historical record was deleted since.
    """
    history_model = _history_model_for(channel, payload)
    try:
        history_id = history_model._meta.pk.to_python(payload.history_id)
    except ValidationError:
        raise InvalidPayload(
            f"history_id {payload.history_id!r} is not a valid primary key of "
            f"{history_model._meta.label} (channel {channel.name()})"
        ) from None
    record = records.get(history_id) if records else None
    before: Any = previous.get(history_id, _UNKNOWN) if previous else _UNKNOWN
    if record is None:
        loaded = load_records(channel, [history_id], using)
        record = loaded.records.get(history_id)
        before = loaded.previous.get(history_id, _UNKNOWN)
    if record is None:
        raise MissingHistoryRecord(
            f"{history_model._meta.label} history_id={history_id} (channel {channel.name()}, "
            f"model {payload.model_label}, object {payload.object_id!r}) no longer exists: the "
            "historical record was deleted after the change was notified"
        )
    return resolve_record(
        channel,
        record,
        using=using,
        migration_id=payload.migration,
        context=payload.context,
        notification_id=payload.notification_id,
        replayed=replayed,
        previous=before,
    )


def resolve_stored(notification: Notification, *, replayed: bool = False) -> ResolvedChange:
    """Resolve a stored notification, on the database it was loaded from.

    Raises:
        ChannelConfigurationError: its channel is not a history channel of this process.
        The errors of :func:`resolve`.
    """
    channel = channel_by_listen_name(notification.channel)
    if channel is None or not is_history_channel(channel):
        raise ChannelConfigurationError(
            f"channel {notification.channel!r} is not a subscribed history channel"
        )
    payload = HistoryPayload.parse(notification.as_payload())
    return resolve(channel, payload, using=notification._state.db or "default", replayed=replayed)


_UNKNOWN: Any = object()


def resolve_record(
    channel: type[HistoryTriggerChannel],
    record: Any,
    *,
    using: str = "default",
    migration_id: int | None = None,
    context: dict[str, Any] | None = None,
    notification_id: int | None = None,
    replayed: bool = False,
    previous: Any = _UNKNOWN,
) -> ResolvedChange:
    """Build the change for a historical record already loaded.

    ``previous`` may give the object's record before this one when it is already loaded
    (``None``: there is none); when it is not given, an update's previous record is queried.
    """
    model = channel.tracked_model()
    history_type = record.history_type
    if history_type == "+":
        old, new = None, to_instance(record, model, using)
    elif history_type == "-":
        old, new = to_instance(record, model, using), None
    else:
        if previous is _UNKNOWN:
            previous = previous_record(record, model, using)
        old = to_instance(previous, model, using) if previous is not None else None
        new = to_instance(record, model, using)
    object_id = getattr(record, object_attname(type(record), model))
    if migration_id is None and replayed:
        migration_id = migration_id_as_of(using, model, record.history_date)
    event = HistoryEvent(
        channel=channel.name(),
        model=model,
        history_id=record.pk,
        history_type=history_type,
        history_date=record.history_date,
        history_user_id=getattr(record, "history_user_id", None),
        history_change_reason=getattr(record, "history_change_reason", None),
        object_id=object_id,
        context=dict(context or {}),
        migration_id_at_change=migration_id,
        replayed=replayed,
        notification_id=notification_id,
        using=using,
    )
    return ResolvedChange(channel=channel, old=old, new=new, history=record, event=event)


@dataclass(frozen=True)
class LoadedRecords:
    """Historical records loaded together (see :func:`load_records`)."""

    #: The records, by primary key.
    records: dict[Any, Any]
    #: For each update among them, by its primary key: the object's record before it (``None``
    #: when there is none).
    previous: dict[Any, Any]


def load_records(
    channel: type[HistoryTriggerChannel],
    history_ids: Sequence[Any],
    using: str = "default",
    *,
    prepared: bool = False,
) -> LoadedRecords:
    """The channel's historical records with these ids (malformed or missing ones are absent)
    and, for each update among them, the object's record before it: one query (a prepared
    statement of the connection when ``prepared``, see ``_prepared``)."""
    history_model = channel.history_model()
    pk = history_model._meta.pk
    assert pk is not None
    ids = []
    for value in history_ids:
        try:
            ids.append(pk.to_python(value))
        except ValidationError:
            continue
    if not ids:
        return LoadedRecords({}, {})
    attname = object_attname(history_model, channel.tracked_model())
    single = len(ids) == 1
    sql = _records_sql(history_model, attname, single)
    if prepared:
        pk_type = _pk_db_type(history_model, using)
        sql = _prepared.execute_sql(using, sql, [pk_type if single else f"{pk_type}[]"])
    rows: list[tuple[Any, Any]] = fetch_tagged(
        history_model, sql, [ids[0] if single else ids], using, _PREVIOUS_OF
    )
    records = {record.pk: record for previous_of, record in rows if previous_of is None}
    previous: dict[Any, Any] = {
        key: None for key, record in records.items() if record.history_type == "~"
    }
    for previous_of, record in rows:
        if previous_of is not None:
            previous[pk.to_python(previous_of)] = record
    return LoadedRecords(records, previous)


_PREVIOUS_OF = "psh_previous_of"


@functools.cache
def _pk_db_type(history_model: type[models.Model], using: str) -> str:
    """The SQL type of the history model's primary key (``rel_db_type`` builds a field)."""
    pk = history_model._meta.pk
    assert pk is not None
    return str(pk.rel_db_type(connections[using]))


@functools.cache
def _records_sql(history_model: type[models.Model], attname: str, single: bool) -> str:
    """The records with the id ``%s`` (``single``) or whose ids are in the array ``%s``, then
    each update's previous record tagged with its id.

    In the array form each id is looked up on its own (a lateral subquery kept apart by
    ``OFFSET 0``): with ``= ANY(array)`` a history table that grew since it was last analyzed is
    read in full, which made a listener behind a fast writer slower with every batch. The
    single form plans in about two thirds of the time (the listener's path for one waiting
    notification).
    """
    table, obj, date, pk = _sql_names(history_model, attname)
    if single:
        records = f"SELECT * FROM {table} WHERE {pk} = %s"
    else:
        records = (
            "SELECT h.* FROM unnest(%s) AS ids(id) CROSS JOIN LATERAL ("
            f"SELECT * FROM {table} WHERE {pk} = ids.id OFFSET 0) h"
        )
    before_cur = _before(obj, date, pk, f"cur.{obj}", f"cur.{date}", f"cur.{pk}")
    return (
        f"WITH cur AS ({records}) "
        f"SELECT cur.*, NULL AS {_PREVIOUS_OF} FROM cur UNION ALL "
        f"SELECT p.*, cur.{pk} FROM cur CROSS JOIN LATERAL ("
        f"SELECT * FROM {table} {before_cur}) p "
        "WHERE cur.history_type = '~'"
    )


def _before(obj: str, date: str, pk: str, of_obj: str, of_date: str, of_pk: str) -> str:
    """The filter and order that pick the record just before (of_obj, of_date, of_pk): the same
    object, the latest ``(history_date, history_id)`` below it."""
    return (
        f"WHERE {obj} = {of_obj} AND ({date}, {pk}) < ({of_date}, {of_pk}) "
        f"ORDER BY {date} DESC, {pk} DESC LIMIT 1"
    )


def _sql_names(history_model: type[models.Model], attname: str) -> tuple[str, str, str, str]:
    """Quoted table, object column, history_date column and primary key column."""
    meta = history_model._meta
    assert meta.pk is not None
    columns = {f.attname: str(f.column) for f in meta.concrete_fields}
    return (
        _quote(meta.db_table),
        _quote(columns[attname]),
        _quote(columns["history_date"]),
        _quote(meta.pk.column),
    )


def previous_record(record: Any, model: type[models.Model], using: str = "default") -> Any:
    """The same object's record just before ``record`` in ``(history_date, history_id)`` order.

    Unlike simple-history's ``prev_record`` this does not skip records that share a timestamp.
    One indexed query (the object column is indexed by simple-history), compared as a row value.
    """
    history_model: type[models.Model] = type(record)
    attname = object_attname(history_model, model)
    found = fetch_instances(
        history_model,
        _previous_sql(history_model, attname),
        [getattr(record, attname), record.history_date, record.pk],
        using,
    )
    return found[0] if found else None


@functools.cache
def _previous_sql(history_model: type[models.Model], attname: str) -> str:
    table, obj, date, pk = _sql_names(history_model, attname)
    return f"SELECT * FROM {table} {_before(obj, date, pk, '%s', '%s', '%s')}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def to_instance(record: Any, model: type[models.Model], using: str = "default") -> models.Model:
    """An instance of today's ``model`` holding the values of ``record``.

    It looks like a row loaded from the database (``_state.adding`` is False, ``_state.db`` is
    set). Fields excluded from history (``excluded_fields``) hold their model default: they are
    never read from today's live row.
    """
    tracked = _tracked_attnames(type(record), model)
    fields = model._meta.concrete_fields
    values = [
        getattr(record, f.attname) if f.attname in tracked else f.get_default() for f in fields
    ]
    instance: models.Model = model.from_db(using, [f.attname for f in fields], values)
    return instance


_ModelPair = tuple[type[models.Model], type[models.Model]]
_tracked_cache: dict[_ModelPair, frozenset[str]] = {}
_object_attname_cache: dict[_ModelPair, str] = {}


def _tracked_attnames(
    history_model: type[models.Model], model: type[models.Model]
) -> frozenset[str]:
    key = (history_model, model)
    if key not in _tracked_cache:
        history_attnames = {f.attname for f in history_model._meta.concrete_fields}
        excluded = set(getattr(history_model, "_history_excluded_fields", ()) or ())
        _tracked_cache[key] = frozenset(
            f.attname
            for f in model._meta.concrete_fields
            if f.name not in excluded and f.attname in history_attnames
        )
    return _tracked_cache[key]


def object_attname(history_model: type[models.Model], model: type[models.Model]) -> str:
    """Attribute of the historical record holding the object's primary key."""
    key = (history_model, model)
    if key not in _object_attname_cache:
        assert model._meta.pk is not None
        field = history_model._meta.get_field(model._meta.pk.name)
        _object_attname_cache[key] = str(getattr(field, "attname", field.name))
    return _object_attname_cache[key]


def _history_model_for(
    channel: type[HistoryTriggerChannel], payload: HistoryPayload
) -> type[models.Model]:
    expected = channel.history_model()
    try:
        named = apps.get_model(payload.history_model)
    except (LookupError, ValueError):
        if payload.app not in _app_labels():
            raise UnknownModel(
                f"payload on channel {channel.name()} names model {payload.model_label} "
                f"(history model {payload.history_model}, history_id={payload.history_id!r}): "
                f"app {payload.app!r} is not installed"
            ) from None
        # The model was renamed since (its history model with it): the channel's model is today's.
        return expected
    if named is not expected:
        raise InvalidPayload(
            f"payload for {payload.history_model} (history_id={payload.history_id!r}) arrived "
            f"on channel {channel.name()}, whose history model is {expected._meta.label}"
        )
    return expected


def _app_labels() -> set[str]:
    return {config.label for config in apps.get_app_configs()}
