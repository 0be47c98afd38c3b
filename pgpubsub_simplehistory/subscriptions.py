"""Durable subscriptions: a named consumer of tracked models' history with a position of its own.

A history table is an ordered log of every change of a model (history id order is each object's
commit order, ``trigger.HistoryOrder``). A subscription reads it from its position: the past in
batches (catching up), then new records as they commit (live), through the same loop, so there
is no switch to get wrong. The listeners receive what a channel's receive (``old``, ``new``,
``history``, ``event``) and the position moves in the transaction in which their writes commit:
exactly-once database effects per subscription.

* **No record is skipped** (``Horizon``): a history id can be allocated by a transaction that
  commits after a later id. Writers of a followed table hold a shared lock on the table's key
  from before they number a record until they commit; a subscription moves only up to ids that
  were allocated before every writer it saw holding that lock had finished.
* **A failure stops nothing but its object**: the failing record is stored in the queue (retried
  with backoff, parked after ``max_attempts``, like a lockable channel's notification), the
  position moves past it, and the object's later records are stored behind it until it settles.
* **A worker that dies** leaves the subscription's lease to run out; the next claim counts the
  attempt at that position and goes record by record, and parks a record that keeps killing
  its worker.
* **Cleaned history** (``trigger.HistoryRemoval``): records deleted above the position before
  delivery stop the subscription, which says how many; ``subscriptions resume --accept-loss``
  or a rewind goes on.

Adding a subscription to a model changes its triggers once (a migration); more subscriptions of
the same model cost the write path nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.db import connections, models, transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from . import _pgtrigger, conf, queue, registry
from ._sql import identifier
from .channels import HistoryTriggerChannel, order_history_of
from .dispatch import dispatch
from .exceptions import ChannelConfigurationError
from .failures import classify, describe, usable
from .history_models import history_model_of, numbered, object_attname
from .models import Position
from .records import (
    count_between,
    first_history_id_at_or_after,
    has_records_between,
    last_history_id,
    load_records,
    records_above,
    records_between,
)
from .resolution import resolve_record
from .settlement import (
    Outcome,
    RetryPolicy,
    Settlement,
    announce,
    format_traceback,
    logger,
)
from .trigger import MARK_CLASS, HistoryRemoval

#: Where a new subscription starts: the first record, or only changes from now on.
BEGINNING = "beginning"
NOW = "now"


class HistorySubscription:
    """Declare one per consumer; subscribe listeners to it with the channel decorators.

    ::

        class SearchIndex(HistorySubscription):
            model = Order               # or models = (Order, Customer)
            start = "2025-01-01"        # "beginning" (default), "now", a date, a history id

        @post_save_listener(SearchIndex)
        def index(new, event): ...

    ``manage.py listen`` delivers its history: the past first, then each change as it commits.

    Attributes:
        model / models: The tracked model(s) it follows; each has a position of its own.
        start: Where a new subscription starts: ``"beginning"``, ``"now"``, a date or datetime
            (ISO 8601 text too: the first record recorded then or later), or a history id
            (that record first).
        name: Its name (default: the class path); its positions are stored under it.
        history_types: The history types it delivers (default ``"+~-"``); its position moves
            past the others.
        max_attempts, retry_base_delay, retry_max_delay, parked_blocks_object: As for a
            channel.
        batch_size: Records delivered in one transaction while catching up.
    """

    model: ClassVar[Any] = None
    models: ClassVar[Sequence[Any]] = ()
    start: ClassVar[Any] = BEGINNING
    name: ClassVar[str | None] = None
    history_types: ClassVar[str] = "+~-"
    max_attempts: ClassVar[int] = 5
    retry_base_delay: ClassVar[float] = 1.0
    retry_max_delay: ClassVar[float] = 300.0
    parked_blocks_object: ClassVar[bool] = True
    batch_size: ClassVar[int] = 500

    _streams: ClassVar[list[type[Stream]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        followed = list(cls.models) or ([cls.model] if cls.model is not None else [])
        if not followed:
            return  # an abstract base subscription
        cls._streams = [_stream(cls, model) for model in followed]
        registry.add_subscription(cls)

    @classmethod
    def subscription_name(cls) -> str:
        return cls.name or f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def streams(cls) -> list[type[Stream]]:
        """One per followed model: what its listeners are subscribed to, what the worker runs."""
        return list(cls._streams)


class Stream(HistoryTriggerChannel):
    """One subscription's view of one model: a channel without a trigger of its own."""

    publishes = False
    lock_notifications = True
    subscription: ClassVar[type[HistorySubscription]]

    @classmethod
    def name(cls) -> str:
        return f"{cls.subscription.subscription_name()}[{cls.model._meta.label}]"

    @classmethod
    def listen_safe_name(cls) -> str:
        digest = hashlib.sha1(cls.name().encode(), usedforsecurity=False).hexdigest()[:12]
        return f"psh_sub_{digest}"


def _stream(subscription: type[HistorySubscription], model: Any) -> type[Stream]:
    attributes = {
        "model": model,
        "publishes": False,
        "subscription": subscription,
        "__module__": subscription.__module__,
        "__qualname__": f"{subscription.__qualname__}[{getattr(model, '__name__', model)}]",
    }
    for name in (
        "history_types",
        "max_attempts",
        "retry_base_delay",
        "retry_max_delay",
        "parked_blocks_object",
    ):
        attributes[name] = getattr(subscription, name)
    stream = type(attributes["__qualname__"], (Stream,), attributes)
    history_model = _history_model_or_none(model)
    if history_model is not None and numbered(history_model):
        order_history_of(model, history_model, marked=True)
        if _pgtrigger.trigger_named(history_model, HistoryRemoval.name) is None:
            _pgtrigger.register(HistoryRemoval(), history_model)
    return stream


def _history_model_or_none(model: Any) -> type[models.Model] | None:
    try:
        return history_model_of(model)
    except Exception:  # not a tracked model: the system checks say so
        return None


def is_stream(channel: object) -> bool:
    return isinstance(channel, type) and issubclass(channel, Stream)


def locate(name: str) -> type[HistorySubscription] | None:
    """A subscription by its name."""
    return next((s for s in registry.subscriptions() if s.subscription_name() == name), None)


# -- positions ---------------------------------------------------------------------------------


def position_of(stream: type[Stream], using: str = "default") -> Position:
    """The stream's position, created where its subscription starts if it has none yet."""
    found = _positions(using).filter(
        subscription=stream.subscription.subscription_name(),
        history_model=stream.history_model()._meta.label,
    )
    existing: Position | None = found.first()
    if existing is not None:
        return existing
    start = start_position(stream, stream.subscription.start, using)
    created: Position = _positions(using).get_or_create(
        subscription=stream.subscription.subscription_name(),
        history_model=stream.history_model()._meta.label,
        defaults={"listen_name": stream.listen_safe_name(), "position": start},
    )[0]
    return created


def _positions(using: str) -> models.QuerySet[Position]:
    positions: models.QuerySet[Position] = Position.objects.using(using)
    return positions


def start_position(stream: type[Stream], start: Any, using: str = "default") -> int:
    """The position before the first record to deliver from ``start`` (see
    :class:`HistorySubscription`). Raises ValueError naming what is wrong."""
    history = stream.history_model()
    if start == BEGINNING:
        return 0
    if start == NOW:
        return last_history_id(history, using)
    if isinstance(start, int) and not isinstance(start, bool):
        return max(start - 1, 0)
    first = first_history_id_at_or_after(history, _when(start), using)
    return first - 1 if first is not None else last_history_id(history, using)


def _when(value: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        parsed: datetime.datetime | None = value
    elif isinstance(value, datetime.date):
        parsed = datetime.datetime.combine(value, datetime.time.min)
    elif isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None and (day := parse_date(value)) is not None:
            parsed = datetime.datetime.combine(day, datetime.time.min)
        if parsed is None and value.isdigit():
            raise ValueError(f"{value!r}: give a history id as an int, a date as text")
    else:
        parsed = None
    if parsed is None:
        raise ValueError(
            f"start {value!r} is not 'beginning', 'now', a date, a datetime or a history id"
        )
    return timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed


def move(stream: type[Stream], to: int, using: str = "default") -> Position:
    """Set the position (a rewind or a skip): the record after ``to`` is delivered next. Clears
    a stop because of removed history."""
    position = position_of(stream, using)
    _positions(using).filter(pk=position.pk).update(
        position=to, stopped="", removed_ahead=0, attempts=0, attempt_from=None
    )
    position.refresh_from_db()
    return position


def set_paused(stream: type[Stream], paused: bool, using: str = "default") -> Position:
    position = position_of(stream, using)
    _positions(using).filter(pk=position.pk).update(paused=paused)
    position.refresh_from_db()
    return position


def accept_loss(stream: type[Stream], using: str = "default") -> Position:
    """Go on after history was removed above the position (what was removed is lost to it)."""
    position = position_of(stream, using)
    _positions(using).filter(pk=position.pk).update(stopped="", removed_ahead=0)
    position.refresh_from_db()
    return position


# -- the horizon -------------------------------------------------------------------------------


class Horizon:
    """The highest history id of one table below which every record is final (committed, or
    never to be: a rolled-back or wasted id).

    A writer of a followed table takes a shared lock on the table's key before it numbers a
    record, and holds it until it commits (``trigger.HistoryOrder``). So an id allocated before
    the moment M is final once every writer that held the key at M has finished. Each
    :meth:`advance` reads the last allocated id, then the writers holding the key, and
    remembers them; an earlier reading becomes the horizon once none of its writers remains.
    """

    def __init__(self, history_model: type[models.Model], using: str = "default") -> None:
        self.table = str(history_model._meta.db_table)
        self.column = str(history_model._meta.pk.column)
        self.using = using
        self.value = 0
        self._readings: deque[tuple[int, frozenset[str]]] = deque()
        self._sequence: str | None = None

    def advance(self) -> int:
        with connections[self.using].cursor() as cursor:
            if self._sequence is None:
                cursor.execute(
                    "SELECT pg_get_serial_sequence(%s, %s)", [identifier(self.table), self.column]
                )
                self._sequence = cursor.fetchone()[0]
                if self._sequence is None:
                    raise ChannelConfigurationError(
                        f"{self.table}.{self.column} is not numbered by a sequence: durable "
                        "subscriptions need numbered history ids"
                    )
            cursor.execute(
                f"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "
                f"FROM {self._sequence}"
            )
            allocated = int(cursor.fetchone()[0])
            cursor.execute(
                "SELECT virtualtransaction FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = %s AND objid = hashtext(%s)::oid AND granted "
                "AND pid <> pg_backend_pid()",
                [MARK_CLASS, self.table],
            )
            writing = frozenset(str(row[0]) for row in cursor.fetchall())
        self._readings.append((allocated, writing))
        while self._readings and not (self._readings[0][1] & writing):
            self.value = max(self.value, self._readings.popleft()[0])
        return self.value


# -- following ---------------------------------------------------------------------------------

_PEEK = """
SELECT position, NOT paused AND stopped = '', removed_ahead > 0
FROM pgpubsub_simplehistory_position WHERE id = %(id)s
"""

_CLAIM = """
UPDATE pgpubsub_simplehistory_position
SET leased_by = %(worker)s,
    leased_until = now() + %(lease)s * interval '1 second',
    attempts = CASE WHEN attempt_from = position THEN attempts + 1 ELSE 1 END,
    attempt_from = position
WHERE id = %(id)s AND NOT paused AND stopped = ''
  AND (leased_until IS NULL OR leased_until < now() OR leased_by = %(worker)s)
RETURNING position, attempts, removed_ahead
"""

_MOVE = """
UPDATE pgpubsub_simplehistory_position
SET position = %(to)s, attempts = 0, attempt_from = NULL, moved_at = now(), rate = %(rate)s
WHERE id = %(id)s AND leased_by = %(worker)s AND position = %(from)s
"""

_RELEASE = """
UPDATE pgpubsub_simplehistory_position
SET leased_by = '', leased_until = NULL, attempts = 0, attempt_from = NULL
WHERE id = %(id)s AND leased_by = %(worker)s
"""

_STOP = """
UPDATE pgpubsub_simplehistory_position SET stopped = %(reason)s, leased_by = '',
    leased_until = NULL
WHERE id = %(id)s
"""


@dataclass
class Followed:
    """What one :func:`follow` call did."""

    delivered: int = 0
    #: Records stored in the queue instead (they failed, or their object waits there).
    stored: int = 0
    #: It reached the horizon: nothing more to deliver now.
    caught_up: bool = True
    position: int = 0
    horizon: int = 0


class Rate:
    """Records per second a follower delivered over its last ``WINDOW`` seconds of moving."""

    WINDOW = 10.0

    def __init__(self) -> None:
        self._points: deque[tuple[float, int]] = deque()  # (perf_counter, delivered so far)
        self._delivered = 0
        self.value: float | None = None

    def moved(self, delivered: int, started: float) -> None:
        """A batch that started at ``started`` (``time.perf_counter``) delivered ``delivered``."""
        now = time.perf_counter()
        if not self._points or now - self._points[-1][0] > self.WINDOW:
            self._points.clear()  # moving again after a pause: measure from this batch
            self._points.append((started, self._delivered))
        self._delivered += delivered
        self._points.append((now, self._delivered))
        while len(self._points) > 2 and now - self._points[1][0] > self.WINDOW:
            self._points.popleft()
        since, before = self._points[0]
        self.value = (self._delivered - before) / (now - since) if now > since else None


class Follower:
    """A worker's state for following one stream: its horizon, and what it announced."""

    def __init__(self, stream: type[Stream], worker: str, using: str = "default") -> None:
        self.stream = stream
        self.worker = worker
        self.using = using
        self.history_model = stream.history_model()
        self.model = stream.tracked_model()
        self.attname = object_attname(self.history_model, self.model)
        self.horizon = Horizon(self.history_model, using)
        self.position_id = position_of(stream, using).pk
        self.policy = RetryPolicy.of(stream)
        self._reported_stop = False
        self._ran = False  # the last delivery's listeners and move ran (before its COMMIT)
        self.rate = Rate()

    def follow(self, limit: int | None = None) -> Followed:
        """Deliver the next batch above the position, up to the horizon (call outside a
        transaction). Announces each delivered record like a processed notification."""
        horizon = self.horizon.advance()
        with connections[self.using].cursor() as cursor:
            cursor.execute(_PEEK, {"id": self.position_id})
            peek = cursor.fetchone()
        if peek is None:
            return Followed()
        at, ready = int(peek[0]), bool(peek[1])
        if not ready:
            return Followed(position=at, horizon=horizon)
        if not has_records_between(self.history_model, at, horizon, self.using) and not peek[2]:
            return Followed(position=at, horizon=horizon)
        with connections[self.using].cursor() as cursor:
            cursor.execute(
                _CLAIM,
                {"worker": self.worker, "lease": conf.lease_seconds(), "id": self.position_id},
            )
            row = cursor.fetchone()
        if row is None:  # paused, stopped, or another worker has it
            return Followed(caught_up=True)
        start, attempts, removed = int(row[0]), int(row[1]), int(row[2])
        if removed:
            self._stop(start, removed)
            return Followed(caught_up=True, position=start)
        if attempts > self.policy.max_attempts:
            return self._park_killer(start, horizon)
        single = attempts > 1  # the last claim at this position did not move it: a worker died
        size = 1 if single else (limit or self.stream.subscription.batch_size)
        records = records_between(self.history_model, start, horizon, size, self.using)
        if not records:
            self._release()
            return Followed(caught_up=True, position=start, horizon=horizon)
        try:
            done = self._deliver(start, records)
        except _Lost:
            return Followed(caught_up=False, position=start, horizon=horizon)
        except Exception:
            if not usable(self.using):
                raise
            done = self._one_by_one(start, records)
        done.horizon = horizon
        done.caught_up = done.position >= horizon
        return done

    # Each record's listeners run in the batch's transaction; the position moves in it.
    def _deliver(self, start: int, records: list[Any]) -> Followed:
        started = time.perf_counter()
        previous = self._previous(records)
        held = queue.stored_objects(
            self.stream.listen_safe_name(), self.stream.parked_blocks_object, self.using
        )
        settlements = []
        stored = 0
        self._ran = False
        with transaction.atomic(using=self.using):
            for record in records:
                if record.history_type not in self.stream.history_types:
                    continue  # not delivered by this subscription: the position moves past it
                object_id = str(getattr(record, self.attname))
                if object_id in held:
                    self._store(record)
                    stored += 1
                    continue
                change = resolve_record(
                    self.stream,
                    record,
                    using=self.using,
                    previous=previous.get(record.pk),
                )
                dispatch(change)
                settlements.append(self._settlement(record, started))
            self.rate.moved(len(settlements), started)
            self._move(start, int(records[-1].pk))
            self._ran = True
        announce(settlements)
        return Followed(len(settlements), stored, position=int(records[-1].pk))

    def _one_by_one(self, start: int, records: list[Any]) -> Followed:
        """After a failed batch: each record in its own transaction; a failing one goes to the
        queue with its error (its object's later records follow it there)."""
        followed = Followed(position=start)
        position = start
        for record in records:
            started = time.perf_counter()
            try:
                done = self._deliver(position, [record])
            except _Lost:
                break
            except Exception as exc:
                if not usable(self.using):
                    raise
                # described as a channel's failure is: the COMMIT, a cancelled statement, ...
                error = classify(exc, self._ran, self.using, time.perf_counter() - started)
                self._fail(position, record, error)
                followed.stored += 1
            else:
                followed.delivered += done.delivered
                followed.stored += done.stored
            position = int(record.pk)
            followed.position = position
        return followed

    def _fail(self, start: int, record: Any, exc: BaseException) -> None:
        park = self.policy.parks(1, exc)
        with transaction.atomic(using=self.using):
            self._store(
                record,
                error=describe(exc),
                traceback=format_traceback(exc),
                attempts=1,
                park=park,
                delay=self.policy.delay(1),
            )
            self._move(start, int(record.pk))
        settled = self._settlement(record, time.perf_counter(), Outcome.PARKED if park else None)
        announce(
            [
                dataclasses.replace(
                    settled,
                    outcome=Outcome.PARKED if park else Outcome.RETRY,
                    error=exc,
                    retry_in=None if park else self.policy.delay(1),
                    lag=None,
                )
            ]
        )

    def _park_killer(self, start: int, horizon: int) -> Followed:
        """The record after the position was claimed max_attempts times without the position
        moving: each time its worker died. Park it and go on."""
        found = records_between(self.history_model, start, horizon, 1, self.using)
        if not found:
            self._release()
            return Followed(position=start, horizon=horizon)
        record = found[0]
        with transaction.atomic(using=self.using):
            self._store(
                record,
                error=f"{queue.DIED}{self.worker} and earlier ones "
                f"({self.policy.max_attempts} attempts)",
                attempts=self.policy.max_attempts,
                park=True,
            )
            self._move(start, int(record.pk))
        logger.error(
            "%s: history_id=%s killed its worker %d times; parked",
            self.stream.name(),
            record.pk,
            self.policy.max_attempts,
        )
        return Followed(stored=1, caught_up=False, position=int(record.pk), horizon=horizon)

    def _previous(self, records: list[Any]) -> dict[Any, Any]:
        updates = [r.pk for r in records if r.history_type == "~"]
        if not updates:
            return {}
        return load_records(self.history_model, self.attname, updates, self.using).previous

    def _store(self, record: Any, **failure: Any) -> None:
        queue.store_record(
            listen_name=self.stream.listen_safe_name(),
            model=str(self.model._meta.label),
            history_model=str(self.history_model._meta.label),
            history_id=record.pk,
            history_type=record.history_type,
            object_id=getattr(record, self.attname),
            using=self.using,
            **failure,
        )

    def _move(self, start: int, to: int) -> None:
        with connections[self.using].cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pgpubsub_simplehistory_position WHERE id = %s FOR UPDATE",
                [self.position_id],
            )
            cursor.execute(
                _MOVE,
                {
                    "to": to,
                    "id": self.position_id,
                    "worker": self.worker,
                    "from": start,
                    "rate": self.rate.value,
                },
            )
            if cursor.rowcount != 1:  # another worker took it over (our lease ran out)
                raise _Lost()

    def _release(self) -> None:
        with connections[self.using].cursor() as cursor:
            cursor.execute(_RELEASE, {"id": self.position_id, "worker": self.worker})

    def _stop(self, position: int, removed: int) -> None:
        reason = (
            f"{removed} history record(s) of {self.history_model._meta.label} above position "
            f"{position} were deleted before this subscription delivered them (a history "
            "cleanup); `manage.py subscriptions resume --accept-loss` goes on without them, "
            "`subscriptions rewind` starts again elsewhere"
        )
        with connections[self.using].cursor() as cursor:
            cursor.execute(_STOP, {"id": self.position_id, "reason": reason})
        logger.error("%s stopped: %s", self.stream.name(), reason)

    def _settlement(
        self, record: Any, started: float, outcome: Outcome | None = None
    ) -> Settlement:
        return Settlement(
            channel=self.stream,
            outcome=outcome or Outcome.PROCESSED,
            model=str(self.model._meta.label),
            history_id=str(record.pk),
            history_type=record.history_type,
            notification_id=None,
            attempt=1,
            duration=time.perf_counter() - started,
            lag=(timezone.now() - record.history_date).total_seconds(),
        )


class _Lost(Exception):
    """The lease ran out and another worker moved the position: this batch rolled back."""


# -- what the commands and health report -------------------------------------------------------


@dataclass(frozen=True)
class StreamState:
    """A subscription's state for one model, for ``subscriptions list`` and health probes."""

    subscription: str
    model: str
    position: int
    last: int
    behind: int
    lag_seconds: float | None
    paused: bool
    stopped: str
    stored: int
    leased_by: str
    #: Records per second its worker delivered lately (0 while it is behind and nobody moves
    #: it; None when it is live and has had nothing to deliver lately).
    rate: float | None = None
    #: The key of its stored notifications (its failures and what they hold back).
    listen_name: str = ""

    @property
    def eta_seconds(self) -> float | None:
        """Seconds to catch up at the current rate (None when live or not moving)."""
        if self.behind and self.rate:
            return self.behind / self.rate
        return None

    @property
    def state(self) -> str:
        if self.stopped:
            return "stopped"
        if self.paused:
            return "paused"
        return "live" if self.behind == 0 else "catching up"


def states(
    using: str = "default", streams: Sequence[type[Stream]] | None = None
) -> list[StreamState]:
    """The state of ``streams`` (default: every stream of every subscription), read only: a
    stream no worker has served yet is shown where it would start. Two queries, plus one per
    stream on its history table (each part of it an index probe)."""
    if streams is None:
        streams = [s for sub in registry.subscriptions() for s in sub.streams()]
    if not streams:
        return []
    positions = {
        (p.subscription, p.history_model): p
        for p in _positions(using).filter(
            subscription__in={s.subscription.subscription_name() for s in streams}
        )
    }
    stored = queue.stored_counts([s.listen_safe_name() for s in streams], using)
    found = []
    for stream in streams:
        key = (stream.subscription.subscription_name(), stream.history_model()._meta.label)
        position = positions.get(key)
        if position is None:
            at = start_position(stream, stream.subscription.start, using)
            position = Position(subscription=key[0], history_model=key[1], position=at)
        found.append(_state(stream, position, stored.get(stream.listen_safe_name(), 0), using))
    return found


def state_of(stream: type[Stream], using: str = "default") -> StreamState:
    """The state of one stream (see :func:`states`)."""
    return states(using, [stream])[0]


def _state(stream: type[Stream], position: Position, stored: int, using: str) -> StreamState:
    behind, last, first = records_above(stream.history_model(), position.position, using)
    return StreamState(
        subscription=stream.subscription.subscription_name(),
        model=str(stream.model._meta.label),
        position=position.position,
        last=last,
        behind=behind,
        lag_seconds=(timezone.now() - first).total_seconds() if first else None,
        paused=position.paused,
        stopped=position.stopped,
        stored=stored,
        leased_by=position.leased_by,
        rate=_recent_rate(position, behind),
        listen_name=stream.listen_safe_name(),
    )


def delivered_since(stream: type[Stream], origin: int, using: str = "default") -> int:
    """History records between ``origin`` (a former position) and the position now."""
    position = position_of(stream, using).position
    return count_between(stream.history_model(), origin, position, using)


def _recent_rate(position: Position, behind: int) -> float | None:
    moved = position.moved_at
    if moved is not None and (timezone.now() - moved).total_seconds() <= 3 * Rate.WINDOW:
        return position.rate
    return 0.0 if behind else None
