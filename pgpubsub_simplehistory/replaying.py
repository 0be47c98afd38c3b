"""Replay: run the listeners again for chosen history records.

The history table is a durable log of every change: replay selects records of one model, resolves
each exactly as the worker does (same ``old``/``new``, same metadata, ``event.replayed`` True)
through the same loader, resolution and dispatch, and runs the subscribed listeners, each record
in its own transaction, in history order (``records``: the order delivery follows). Records are
read in chunks (each chunk's previous records in one query), so memory does not grow with
their number. Replay is at-least-once by
nature: listeners should be idempotent.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Subquery
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from simple_history.exceptions import NotHistoricalModelError

from . import queue, registry
from .channels import is_history_channel, locate
from .dispatch import dispatch
from .event import MigrationTimeline
from .exceptions import PgpubsubSimplehistoryError
from .history_models import history_model_of, object_attname
from .models import Notification
from .records import history_order, load_records
from .registry import HISTORY_TYPES, Listener
from .resolution import resolve_record, resolve_stored
from .settlement import logger

#: Records read (and their previous records loaded) at once.
CHUNK = 500


class ReplayError(PgpubsubSimplehistoryError):
    """The replay request is invalid (unknown model, id, channel, listener, date...)."""


@dataclass(frozen=True)
class ReplayItem:
    """One history record and the listeners it will be (or was) delivered to."""

    history_id: Any
    history_type: str
    history_date: datetime.datetime
    object_id: Any
    listeners: tuple[Listener, ...]


@dataclass
class ReplayResult:
    """What a replay did."""

    replayed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        return f"replayed {self.replayed}, failed {self.failed}, skipped {self.skipped}"


@dataclass(frozen=True)
class ReplayPlan:
    """A validated replay request: what will be selected and who will receive it."""

    model: type[models.Model]
    history_model: type[models.Model]
    listeners: tuple[Listener, ...]
    queryset: models.QuerySet[Any]
    using: str

    def count(self) -> int:
        return self.queryset.count()

    def items(self) -> Iterator[tuple[Any, Any, dict[str, Any], ReplayItem]]:
        """``(record, previous record or None, context, item)`` in history order; the context is
        the one stored with the record's notification while it is still stored."""
        attname = object_attname(self.history_model, self.model)
        chunk: list[Any] = []
        for record in self.queryset.iterator(chunk_size=CHUNK):
            chunk.append(record)
            if len(chunk) >= CHUNK:
                yield from self._chunk(chunk, attname)
                chunk = []
        if chunk:
            yield from self._chunk(chunk, attname)

    def _chunk(
        self, records: list[Any], attname: str
    ) -> Iterator[tuple[Any, Any, dict[str, Any], ReplayItem]]:
        updates = [r.pk for r in records if r.history_type == "~"]
        previous = (
            load_records(self.history_model, attname, updates, self.using).previous
            if updates
            else {}
        )
        contexts = queue.contexts(
            sorted({s.channel.listen_safe_name() for s in self.listeners}),
            str(self.history_model._meta.label),
            [r.pk for r in records],
            self.using,
        )
        for record in records:
            subs = tuple(s for s in self.listeners if s.accepts(record.history_type))
            item = ReplayItem(
                history_id=record.pk,
                history_type=record.history_type,
                history_date=record.history_date,
                object_id=getattr(record, attname),
                listeners=subs,
            )
            yield record, previous.get(record.pk), contexts.get(str(record.pk), {}), item


def plan_replay(
    model: str | type[models.Model],
    history_ids: Sequence[Any] = (),
    *,
    since: str | datetime.datetime | None = None,
    until: str | datetime.datetime | None = None,
    object_ids: Sequence[Any] = (),
    history_types: Sequence[str] = (),
    channel: str | type[Any] | None = None,
    listener: str | Callable[..., Any] | None = None,
    select_all: bool = False,
    using: str = "default",
) -> ReplayPlan:
    """Validate a replay request. Raises :class:`ReplayError` naming what is wrong."""
    model_cls = _model(model)
    history_model = _history_model(model_cls)
    listeners = _listeners(model_cls, channel, listener)
    if not (history_ids or since or until or object_ids or history_types or select_all):
        raise ReplayError(
            "nothing selected: give history ids, --since/--until, --object, --type or --all"
        )
    if select_all:
        given = [
            name
            for name, value in (
                ("history ids", history_ids),
                ("--since", since),
                ("--until", until),
                ("--object", object_ids),
                ("--type", history_types),
            )
            if value
        ]
        if given:
            raise ReplayError(
                f"--all cannot be combined with {', '.join(given)} (it selects every record "
                f"of {model_cls._meta.label})"
            )
    pk = history_model._meta.pk
    assert pk is not None
    queryset = history_model._default_manager.using(using).all()
    if history_ids:
        ids = [_parse(pk, value, "history id") for value in history_ids]
        found = set(queryset.filter(pk__in=ids).values_list("pk", flat=True))
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise ReplayError(
                f"unknown history id(s) of {history_model._meta.label}: {', '.join(missing)}"
            )
        queryset = queryset.filter(pk__in=ids)
    if object_ids:
        model_pk = model_cls._meta.pk
        assert model_pk is not None
        attname = object_attname(history_model, model_cls)
        objects = [_parse(model_pk, value, "object id") for value in object_ids]
        queryset = queryset.filter(**{f"{attname}__in": objects})
    if history_types:
        unknown = sorted(set(history_types) - set(HISTORY_TYPES))
        if unknown:
            raise ReplayError(f"unknown history type(s) {', '.join(unknown)}: use + ~ -")
        queryset = queryset.filter(history_type__in=list(history_types))
    order = history_order(history_model)
    if since:
        queryset = _from_first_at_or_after(queryset, _datetime(since, "--since"), pk.name, order)
    if until:
        queryset = _up_to_last_at_or_before(
            queryset, _datetime(until, "--until", end=True), pk.name, order
        )
    queryset = queryset.order_by(*order)
    return ReplayPlan(model_cls, history_model, listeners, queryset, using)


def _from_first_at_or_after(
    queryset: models.QuerySet[Any], when: datetime.datetime, pk: str, order: list[str]
) -> models.QuerySet[Any]:
    """The records from the first one recorded at or after ``when``, in history order: a later
    change whose ``history_date`` says earlier (another server's clock) is not left out."""
    if order != [pk]:  # UUID history ids: history order is the dates
        after: models.QuerySet[Any] = queryset.filter(history_date__gte=when)
        return after
    first = queryset.filter(history_date__gte=when).order_by(pk).values(pk)[:1]
    kept: models.QuerySet[Any] = queryset.filter(**{f"{pk}__gte": Subquery(first)})
    return kept


def _up_to_last_at_or_before(
    queryset: models.QuerySet[Any], when: datetime.datetime, pk: str, order: list[str]
) -> models.QuerySet[Any]:
    """The records up to the last one recorded at or before ``when``, in history order."""
    if order != [pk]:
        before: models.QuerySet[Any] = queryset.filter(history_date__lte=when)
        return before
    last = queryset.filter(history_date__lte=when).order_by(f"-{pk}").values(pk)[:1]
    kept: models.QuerySet[Any] = queryset.filter(**{f"{pk}__lte": Subquery(last)})
    return kept


def replay(
    model: str | type[models.Model],
    history_ids: Sequence[Any] = (),
    *,
    dry_run: bool = False,
    stop_on_error: bool = False,
    on_item: Callable[[ReplayItem, str], None] | None = None,
    **selection: Any,
) -> ReplayResult:
    """Re-deliver history records of ``model`` to their channels' listeners.

    ``selection`` takes the keyword arguments of :func:`plan_replay` (``since``, ``until``,
    ``object_ids``, ``history_types``, ``channel``, ``listener``, ``select_all``, ``using``).
    ``on_item(item, outcome)`` is called after each record with ``"replayed"``, ``"failed"``,
    ``"skipped"`` or ``"dry-run"``.

    Raises:
        ReplayError: the request is invalid; nothing was run.
    """
    plan = plan_replay(model, history_ids, **selection)
    return run_plan(plan, dry_run=dry_run, stop_on_error=stop_on_error, on_item=on_item)


def run_plan(
    plan: ReplayPlan,
    *,
    dry_run: bool = False,
    stop_on_error: bool = False,
    on_item: Callable[[ReplayItem, str], None] | None = None,
) -> ReplayResult:
    """Run a validated replay (see :func:`replay`)."""
    result = ReplayResult()
    timeline = MigrationTimeline(plan.using, plan.model)
    for record, previous, context, item in plan.items():
        if dry_run:
            outcome = "dry-run"
        elif not item.listeners:
            result.skipped += 1
            outcome = "skipped"
        else:
            outcome = _replay_one(plan, record, previous, context, item, timeline, result)
        if on_item is not None:
            on_item(item, outcome)
        if outcome == "failed" and stop_on_error:
            break
    return result


def _replay_one(
    plan: ReplayPlan,
    record: Any,
    previous: Any,
    context: dict[str, Any],
    item: ReplayItem,
    timeline: MigrationTimeline,
    result: ReplayResult,
) -> str:
    by_channel: dict[type[Any], list[Listener]] = {}
    for listener in item.listeners:
        by_channel.setdefault(listener.channel, []).append(listener)
    try:
        with transaction.atomic(using=plan.using):
            for channel, listeners in by_channel.items():
                change = resolve_record(
                    channel,
                    record,
                    using=plan.using,
                    migration_id=timeline.as_of(record.history_date),
                    context=context,
                    replayed=True,
                    previous=previous,
                )
                dispatch(change, listeners)
    except Exception as exc:
        logger.exception(
            "replay of %s history_id=%s failed", plan.history_model._meta.label, item.history_id
        )
        result.failed += 1
        result.errors.append((item.history_id, f"{type(exc).__name__}: {exc}"))
        return "failed"
    result.replayed += 1
    return "replayed"


def replay_notification(notification: Notification) -> None:
    """Run the listeners of a stored notification's channel again for its history record.

    In one transaction, ``event.replayed`` True, with the notification's context; the stored
    notification itself is untouched. Raises the listener's exception, or a
    :class:`PgpubsubSimplehistoryError` when the record cannot be resolved.
    """
    with transaction.atomic(using=notification._state.db or "default"):
        dispatch(resolve_stored(notification, replayed=True))


def _model(model: str | type[models.Model]) -> type[models.Model]:
    if isinstance(model, type):
        return model
    try:
        return apps.get_model(model)
    except (LookupError, ValueError):
        raise ReplayError(f"unknown model {model!r} (expected app_label.ModelName)") from None


def _history_model(model: type[models.Model]) -> type[models.Model]:
    try:
        return history_model_of(model)
    except NotHistoricalModelError:
        raise ReplayError(f"{model._meta.label} has no history (HistoricalRecords)") from None


def _listeners(
    model: type[models.Model],
    channel: str | type[Any] | None,
    listener: str | Callable[..., Any] | None,
) -> tuple[Listener, ...]:
    channels = [c for c in registry.channels_with_listeners() if c.model is model]
    if channel is not None:
        wanted = locate(channel)
        if wanted is None:
            raise ReplayError(f"channel {channel!r} not found")
        if not is_history_channel(wanted) or wanted not in channels:
            raise ReplayError(
                f"channel {getattr(wanted, '__qualname__', wanted)} does not publish "
                f"{model._meta.label}"
            )
        channels = [wanted]
    if not channels:
        raise ReplayError(f"no history channel with listeners publishes {model._meta.label}")
    listeners = [s for c in channels for s in c.listeners()]
    if listener is not None:
        name = listener if isinstance(listener, str) else _dotted(listener)
        listeners = [s for s in listeners if s.name == name]
        if not listeners:
            raise ReplayError(
                f"listener {name} is not subscribed to a channel of {model._meta.label}"
            )
    return tuple(listeners)


def _dotted(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _parse(field_: Any, value: Any, what: str) -> Any:
    try:
        return field_.to_python(value)
    except ValidationError:
        raise ReplayError(f"malformed {what} {value!r}") from None


def _datetime(value: str | datetime.datetime, option: str, end: bool = False) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        parsed: datetime.datetime | None = value
    else:
        try:
            parsed = parse_datetime(value)
            if parsed is None:
                day = parse_date(value)
                if day is not None:
                    parsed = datetime.datetime.combine(
                        day, datetime.time.max if end else datetime.time.min
                    )
        except ValueError:
            parsed = None
    if parsed is None:
        raise ReplayError(f"{option}: {value!r} is not an ISO 8601 date or datetime")
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed
