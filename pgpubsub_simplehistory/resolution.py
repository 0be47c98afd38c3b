"""Resolution: a history record → ``old`` / ``new`` instances of today's model and a
``HistoryEvent``; no SQL of its own (records come from ``records``).

Used by the worker, by replay and by the admin alike. Everything is read through *today's*
models: the history table has been migrated together with the model, so a pointer written before
a migration resolves to an instance of the model as it is now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import models

from . import registry
from ._simple_history import excluded_fields
from .event import HistoryEvent, migration_id_as_of
from .exceptions import (
    ChannelConfigurationError,
    InvalidPayload,
    MissingHistoryRecord,
    UnknownModel,
)
from .history_models import object_attname
from .payload import HistoryPointer
from .records import LoadedRecords, load_records, previous_record

if TYPE_CHECKING:
    from .channels import HistoryTriggerChannel
    from .models import Notification


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


def load_for(
    channel: type[HistoryTriggerChannel],
    history_ids: list[Any],
    using: str,
    *,
    prepared: bool = False,
) -> LoadedRecords:
    """The channel's records with these ids, each update with its previous record."""
    history_model = channel.history_model()
    attname = object_attname(history_model, channel.tracked_model())
    return load_records(history_model, attname, history_ids, using, prepared=prepared)


def resolve(
    channel: type[HistoryTriggerChannel],
    pointer: HistoryPointer,
    *,
    using: str = "default",
    replayed: bool = False,
    loaded: LoadedRecords | None = None,
) -> ResolvedChange:
    """Find the history record ``pointer`` points at and build the change from it.

    ``loaded`` may hold records already loaded (with each update's previous record), as the
    worker preloads them for a batch; a record missing from it is loaded here.

    Raises:
        UnknownModel: the pointer's app is not installed.
        InvalidPayload: the pointer belongs to another channel's model, or its id is malformed.
        MissingHistoryRecord: the history record was deleted since.
    """
    history_model = _history_model_for(channel, pointer)
    try:
        history_id = history_model._meta.pk.to_python(pointer.history_id)
    except ValidationError:
        raise InvalidPayload(
            f"history_id {pointer.history_id!r} is not a valid primary key of "
            f"{history_model._meta.label} (channel {channel.class_path()})"
        ) from None
    if loaded is None or history_id not in loaded.records:
        loaded = load_for(channel, [history_id], using)
    record = loaded.records.get(history_id)
    if record is None:
        raise MissingHistoryRecord(
            f"{history_model._meta.label} history_id={history_id} (channel "
            f"{channel.class_path()}, model {pointer.model}, object {pointer.object_id!r}) no "
            "longer exists: the history record was deleted after the change was notified"
        )
    return resolve_record(
        channel,
        record,
        using=using,
        migration_id=pointer.migration_id_at_change,
        context=pointer.context,
        notification_id=pointer.notification_id,
        replayed=replayed,
        previous=loaded.previous.get(history_id, _UNKNOWN),
    )


def resolve_stored(notification: Notification, *, replayed: bool = False) -> ResolvedChange:
    """Resolve a stored notification, on the database it was loaded from.

    Raises:
        ChannelConfigurationError: its channel is not a history channel of this project.
        The errors of :func:`resolve`.
    """
    channel = registry.channel_by_listen_name(notification.listen_name)
    if channel is None:
        raise ChannelConfigurationError(
            f"no history channel of this project has the listen name {notification.listen_name!r}"
        )
    return resolve(
        channel,
        HistoryPointer.of_notification(notification),
        using=notification._state.db or "default",
        replayed=replayed,
    )


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
    """Build the change for a history record already loaded.

    ``previous`` may give the object's record before this one when it is already loaded
    (``None``: there is none); when it is not given, an update's previous record is queried.
    """
    model = channel.tracked_model()
    history_type = record.history_type
    attname = object_attname(type(record), model)
    if history_type == "+":
        old, new = None, to_instance(record, model, using)
    elif history_type == "-":
        old, new = to_instance(record, model, using), None
    else:
        if previous is _UNKNOWN:
            previous = previous_record(record, attname, using)
        old = to_instance(previous, model, using) if previous is not None else None
        new = to_instance(record, model, using)
    if migration_id is None and replayed:
        migration_id = migration_id_as_of(using, model, record.history_date)
    event = HistoryEvent(
        channel=channel.class_path(),
        model=model,
        history_id=record.pk,
        history_type=history_type,
        history_date=record.history_date,
        history_user_id=getattr(record, "history_user_id", None),
        history_change_reason=getattr(record, "history_change_reason", None),
        object_id=getattr(record, attname),
        context=dict(context or {}),
        migration_id_at_change=migration_id,
        replayed=replayed,
        notification_id=notification_id,
        using=using,
    )
    return ResolvedChange(channel=channel, old=old, new=new, history=record, event=event)


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


_tracked_cache: dict[tuple[type[models.Model], type[models.Model]], frozenset[str]] = {}


def _tracked_attnames(
    history_model: type[models.Model], model: type[models.Model]
) -> frozenset[str]:
    key = (history_model, model)
    if key not in _tracked_cache:
        history_attnames = {f.attname for f in history_model._meta.concrete_fields}
        excluded = excluded_fields(history_model)
        _tracked_cache[key] = frozenset(
            f.attname
            for f in model._meta.concrete_fields
            if f.name not in excluded and f.attname in history_attnames
        )
    return _tracked_cache[key]


def _history_model_for(
    channel: type[HistoryTriggerChannel], pointer: HistoryPointer
) -> type[models.Model]:
    expected = channel.history_model()
    try:
        named = apps.get_model(pointer.history_model)
    except (LookupError, ValueError):
        if pointer.app not in {config.label for config in apps.get_app_configs()}:
            raise UnknownModel(
                f"notification on channel {channel.class_path()} names model {pointer.model} "
                f"(history model {pointer.history_model}, history_id={pointer.history_id!r}): "
                f"app {pointer.app!r} is not installed"
            ) from None
        # The model was renamed since (its history model with it): the channel's model is today's.
        return expected
    if named is not expected:
        raise InvalidPayload(
            f"notification for {pointer.history_model} (history_id={pointer.history_id!r}) "
            f"arrived on channel {channel.class_path()}, whose history model is "
            f"{expected._meta.label}"
        )
    return expected
