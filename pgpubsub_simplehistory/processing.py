"""Processing: claim a stored notification, resolve it, run the listeners, settle it.

Lockable history channels (``pgpubsub_simplehistory_notification``):

* **claim**: the oldest pending row that is available (``available_at <= now()``) and whose object
  has no earlier open notification, ``FOR UPDATE SKIP LOCKED``, through the partial index on
  pending rows. An earlier notification of the same object that is pending, in flight or waiting
  for a retry (or parked, when the channel's ``parked_blocks_object`` is True) holds back the later
  ones: each object's changes are delivered in history order, different objects in parallel.
* **run**: the listeners run inside the claiming transaction; on success the row is deleted in
  that transaction, so the listeners' database writes and "done" commit together. The first
  notification of a transaction runs directly in it, every later one in a savepoint of its own.
* **settle a failure**: a later notification's savepoint is rolled back; the first
  notification's whole transaction is rolled back (nothing else ran in it yet) and its row is
  settled in a new one. The row gets ``attempts + 1``, its error and traceback, and
  ``available_at`` pushed back exponentially (``retry_base_delay`` * 2^(attempts-1), at most
  ``retry_max_delay``). After ``max_attempts`` it is parked. A payload that cannot be resolved
  (unknown model, history row deleted) is parked at once.

Non-lockable history channels process the NOTIFY payload directly (at most once, as in
django-pgpubsub); django-pgpubsub's own channels are handed to its processors.
"""

from __future__ import annotations

import datetime
import enum
import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from . import _pgpubsub, _prepared, signals
from ._fetch import fetch_instances
from .channel import HistoryTriggerChannel, is_history_channel
from .exceptions import PgpubsubSimplehistoryError
from .models import Notification, State
from .payload import HistoryPayload
from .resolution import LoadedRecords, ResolvedChange, load_records, resolve

logger = logging.getLogger("pgpubsub_simplehistory")


class Outcome(enum.Enum):
    PROCESSED = "processed"
    RETRY = "retry"
    PARKED = "parked"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Settlement:
    """How one notification was settled: the data of log lines and signals."""

    channel: type[HistoryTriggerChannel]
    outcome: Outcome
    model: str
    history_id: str
    history_type: str
    notification_id: int | None
    attempt: int
    duration: float
    error: BaseException | None = None

    def where(self) -> str:
        """Which notification, for log lines."""
        text = f"channel {self.channel.name()} model {self.model} history_id={self.history_id}"
        if self.notification_id is not None:
            text += f" (notification {self.notification_id}, attempt {self.attempt})"
        return text

    def log_fields(self) -> dict[str, Any]:
        """The ``extra`` of the log line: structured fields for JSON log formatters."""
        return {
            "channel": self.channel.name(),
            "model": self.model,
            "history_id": self.history_id,
            "history_type": self.history_type,
            "notification_id": self.notification_id,
            "attempt": self.attempt,
            "duration_ms": round(self.duration * 1000, 3),
            "outcome": self.outcome.value,
        }


_SIGNALS = {
    Outcome.PROCESSED: signals.notification_processed,
    Outcome.RETRY: signals.notification_failed,
    Outcome.FAILED: signals.notification_failed,
    Outcome.PARKED: signals.notification_parked,
}


def emit(settlements: Sequence[Settlement]) -> None:
    """Send the signal of each settlement (call after its transaction committed)."""
    for settled in settlements:
        signal = _SIGNALS.get(settled.outcome)
        if signal is None or not signal.has_listeners(settled.channel):
            continue
        # send_robust: a failing receiver is logged by Django (logger django.dispatch).
        signal.send_robust(
            settled.channel,
            channel=settled.channel.name(),
            model=settled.model,
            history_id=settled.history_id,
            history_type=settled.history_type,
            notification_id=settled.notification_id,
            attempt=settled.attempt,
            duration=settled.duration,
            error=settled.error,
        )


def dispatch(change: ResolvedChange) -> int:
    """Call every listener of the change's channel that subscribes to its history type."""
    called = 0
    for subscription in change.channel.subscriptions():
        if subscription.accepts(change.event.history_type):
            subscription.call(change)
            called += 1
    return called


_TABLE = Notification._meta.db_table

#: Defined by migration 0001 (see there why it is a function).
CLAIM_SQL = "SELECT * FROM pgpubsub_simplehistory_claim(%s, %s, %s)"

#: Notifications claimed and committed together at most (``PGPUBSUB_SIMPLEHISTORY_BATCH_SIZE``).
#: Each runs in a savepoint: a batch stays below the 64 subtransactions Postgres caches per
#: transaction (see ``MAX_CACHED_SUBTRANSACTIONS``).
DEFAULT_BATCH_SIZE = 50
#: Postgres's PGPROC_MAX_CACHED_SUBXIDS: a transaction with more subtransactions that wrote
#: (released savepoints count until the commit) overflows its cache, and every session's
#: snapshot checks then read pg_subtrans until it ends.
MAX_CACHED_SUBTRANSACTIONS = 64
#: A batch stops taking more work after this many seconds, so that slow listeners still commit
#: (and stop) promptly; the claimed rows it did not reach are released by the commit.
BATCH_SECONDS = 0.5


def batch_size() -> int:
    return int(getattr(settings, "PGPUBSUB_SIMPLEHISTORY_BATCH_SIZE", DEFAULT_BATCH_SIZE))


def claim(
    channels: Sequence[type[HistoryTriggerChannel]], using: str = "default", limit: int = 1
) -> list[Notification]:
    """Lock and return up to ``limit`` notifications to process (call inside a transaction).

    The oldest pending, available notifications whose object has no earlier open one (pending,
    in flight, waiting for a retry, or parked on a channel whose parked notifications block):
    at most one per object.
    """
    names = [c.listen_safe_name() for c in channels]
    blocking = [c.listen_safe_name() for c in channels if c.parked_blocks_object]
    return fetch_instances(Notification, CLAIM_SQL, [names, blocking, limit], using)


@dataclass
class Batch:
    """What one :func:`process_batch` call did."""

    counts: dict[Outcome, int]
    #: The last claim found nothing more to do: the queue is drained for now.
    exhausted: bool = False

    @property
    def handled(self) -> int:
        return sum(self.counts.values())


def process_batch(
    channels: Sequence[type[HistoryTriggerChannel]],
    using: str = "default",
    limit: int | None = None,
    should_stop: Any = None,
) -> Batch:
    """Claim and process up to ``limit`` notifications in one transaction.

    The first notification runs directly in the transaction, each later one in its own
    savepoint: a failing later one is settled (retry or park) in the same transaction and the
    others proceed; a failing first one rolls the transaction back (nothing else ran in it) and
    is settled in a new one. One commit makes every success and every settlement durable at
    once. After the claimed rows the transaction claims again (a processed row may have released
    a later notification of its object, and new ones may have arrived) until a claim comes back
    empty, ``limit`` rows were handled, the batch ran ``BATCH_SECONDS`` or ``should_stop()``:
    draining a queue that holds one notification takes one transaction and no savepoint.

    The claimed rows' historical records are loaded in one query per channel, a statement
    prepared once per connection. If that fails (a migration changed a history table under the
    running listener, or the table is broken), the transaction is rolled back, nothing is
    counted against the notifications, and the batch runs again resolving each notification on
    its own, so that a broken one fails alone.
    """
    try:
        return _process_batch(channels, using, limit, should_stop, preload=True)
    except _PreloadFailed as failed:
        _ensure_connection_usable(using)
        _prepared.forget(using)  # a migration may have changed the records' columns
        logger.warning(
            "loading the historical records of a batch failed (%s); processing its "
            "notifications one by one",
            failed.error,
        )
        return _process_batch(channels, using, limit, should_stop, preload=False)


def _process_batch(
    channels: Sequence[type[HistoryTriggerChannel]],
    using: str,
    limit: int | None,
    should_stop: Any,
    preload: bool,
) -> Batch:
    by_name = {c.listen_safe_name(): c for c in channels}
    batch = Batch({outcome: 0 for outcome in Outcome})
    settlements: list[Settlement] = []
    remaining = limit or batch_size()
    try:
        with transaction.atomic(using=using):
            deadline = time.monotonic() + BATCH_SECONDS
            stopped = False
            while remaining > 0 and not stopped:
                rows = claim(channels, using, remaining)
                if not rows:
                    batch.exhausted = True
                    break
                records = _preload(rows, by_name, using) if preload else {}
                done: list[int] = []
                for row in rows:
                    if settlements and (
                        time.monotonic() > deadline or (should_stop and should_stop())
                    ):
                        stopped = True  # the rest is released, untouched, by the commit
                        break
                    channel, loaded = by_name[row.channel], records.get(row.channel)
                    if settlements:
                        settled = _process_row(channel, row, using, loaded)
                    else:
                        settled = _process_first_row(channel, row, using, loaded)
                    settlements.append(settled)
                    batch.counts[settled.outcome] += 1
                    remaining -= 1
                    if settled.outcome is Outcome.PROCESSED:
                        done.append(row.pk)
                if done:
                    with connections[using].cursor() as cursor:
                        cursor.execute(f"DELETE FROM {_TABLE} WHERE id = ANY(%s)", [done])
    except _FirstRowFailed as failed:  # rolled back: settle it in a transaction of its own
        settled = _settle_after_rollback(failed, using)
        settlements.append(settled)
        batch.counts[settled.outcome] += 1
    emit(settlements)
    return batch


def drain(
    channels: Sequence[type[HistoryTriggerChannel]],
    limit: int | None = None,
    should_stop: Any = None,
    using: str = "default",
) -> dict[Outcome, int]:
    """Process available notifications until none is left (or ``limit``, or ``should_stop()``)."""
    counts = {outcome: 0 for outcome in Outcome}
    done = 0
    while limit is None or done < limit:
        if should_stop is not None and should_stop():
            break
        size = batch_size() if limit is None else min(batch_size(), limit - done)
        batch = process_batch(channels, using, size, should_stop)
        for outcome, n in batch.counts.items():
            counts[outcome] += n
        done += batch.handled
        if batch.exhausted or not batch.handled:
            break
    return counts


def _preload(
    rows: list[Notification], by_name: dict[str, type[HistoryTriggerChannel]], using: str
) -> dict[str, LoadedRecords]:
    """Historical records of the claimed rows (with the previous record of each update), by
    channel: one query per channel, a prepared statement of the connection.

    Raises _PreloadFailed on a database error (the transaction is then aborted).
    """
    ids: dict[str, list[str]] = {}
    for row in rows:
        ids.setdefault(row.channel, []).append(row.history_id)
    prepared = _prepared.enabled()
    try:
        return {
            name: load_records(by_name[name], history_ids, using, prepared=prepared)
            for name, history_ids in ids.items()
        }
    except DatabaseError as exc:
        raise _PreloadFailed(exc) from exc


class _PreloadFailed(Exception):
    def __init__(self, error: DatabaseError) -> None:
        super().__init__(str(error))
        self.error = error


def _run(
    channel: type[HistoryTriggerChannel],
    row: Notification,
    using: str,
    loaded: LoadedRecords | None,
) -> None:
    payload = HistoryPayload.parse(row.as_payload())
    change = resolve(
        channel,
        payload,
        using=using,
        records=loaded.records if loaded else None,
        previous=loaded.previous if loaded else None,
    )
    dispatch(change)


class _FirstRowFailed(Exception):
    """The first notification of a transaction failed: roll the transaction back, then settle."""

    def __init__(
        self,
        channel: type[HistoryTriggerChannel],
        row: Notification,
        error: BaseException,
        started: float,
    ) -> None:
        super().__init__(str(error))
        self.channel, self.row, self.error, self.started = channel, row, error, started


class TransactionLeftAborted(Exception):
    """A listener returned normally but left its transaction unusable (it caught a database
    error without rolling back to a savepoint of its own)."""


def _process_first_row(
    channel: type[HistoryTriggerChannel],
    row: Notification,
    using: str,
    loaded: LoadedRecords | None,
) -> Settlement:
    """Run the listeners of the transaction's first row directly in it (no savepoint).

    Raises _FirstRowFailed when they fail, for the caller to roll back and settle.
    """
    started = time.perf_counter()
    try:
        _run(channel, row, using, loaded)
        if _transaction_aborted(using):
            raise TransactionLeftAborted(
                "the listener returned, but its transaction was aborted by a database error it "
                "caught; wrap the statements that may fail in transaction.atomic()"
            )
    except Exception as exc:
        raise _FirstRowFailed(channel, row, exc, started) from exc
    return _settled(channel, row, Outcome.PROCESSED, row.attempts + 1, started)


def _transaction_aborted(using: str) -> bool:
    wrapper = connections[using]
    if wrapper.needs_rollback:
        return True
    info = getattr(wrapper.connection, "info", None)
    return getattr(info, "transaction_status", None) == _PQTRANS_INERROR


#: libpq's PQTRANS_INERROR (psycopg2 and psycopg expose it as ``connection.info``).
_PQTRANS_INERROR = 3


def _settle_after_rollback(failed: _FirstRowFailed, using: str) -> Settlement:
    """Settle a first row whose transaction rolled back, locking its row again.

    In the moment between the rollback and the lock another listener may have claimed it: if it
    processed it, there is nothing left to settle (the outcome is FAILED: this attempt's changes
    were rolled back); if it failed too, both attempts count.
    """
    _ensure_connection_usable(using)
    row, error = failed.row, failed.error
    permanent = isinstance(error, PgpubsubSimplehistoryError)
    with transaction.atomic(using=using):
        pending = (
            Notification.objects.using(using)
            .select_for_update()
            .filter(pk=row.pk, state=State.PENDING)
            .first()
        )
        if pending is not None:
            row = pending
            outcome = _settle_failure(failed.channel, row, error, permanent)
        else:
            outcome = Outcome.FAILED
    return _settled(failed.channel, row, outcome, failed.row.attempts + 1, failed.started, error)


def _process_row(
    channel: type[HistoryTriggerChannel],
    row: Notification,
    using: str,
    loaded: LoadedRecords | None = None,
) -> Settlement:
    """Run the listeners of one claimed row in a savepoint; settle a failure on the row.

    The caller deletes the row when the outcome is PROCESSED, in the same transaction.
    """
    started = time.perf_counter()
    attempt = row.attempts + 1
    error: BaseException | None = None
    try:
        with transaction.atomic(using=using):
            _run(channel, row, using, loaded)
    except PgpubsubSimplehistoryError as exc:
        _ensure_connection_usable(using)
        error, outcome = exc, _settle_failure(channel, row, exc, permanent=True)
    except Exception as exc:
        _ensure_connection_usable(using)
        error, outcome = exc, _settle_failure(channel, row, exc, permanent=False)
    else:
        outcome = Outcome.PROCESSED
    return _settled(channel, row, outcome, attempt, started, error)


def _settled(
    channel: type[HistoryTriggerChannel],
    row: Notification,
    outcome: Outcome,
    attempt: int,
    started: float,
    error: BaseException | None = None,
) -> Settlement:
    """The settlement of a stored notification, logged."""
    settled = Settlement(
        channel=channel,
        outcome=outcome,
        model=row.model,
        history_id=row.history_id,
        history_type=row.history_type,
        notification_id=row.pk,
        attempt=attempt,
        duration=time.perf_counter() - started,
        error=error,
    )
    _log(settled, row.available_at)
    return settled


def _log(settled: Settlement, retry_at: datetime.datetime | None = None) -> None:
    """One line per settled notification, with its structured fields."""
    if settled.outcome is Outcome.PROCESSED:
        if logger.isEnabledFor(logging.INFO):  # the hot path: build the line only when logged
            logger.info(
                "processed %s type=%s in %.1f ms",
                settled.where(),
                settled.history_type,
                settled.duration * 1000,
                extra=settled.log_fields(),
            )
    elif isinstance(settled.error, PgpubsubSimplehistoryError):
        parked = "; parked" if settled.outcome is Outcome.PARKED else ""
        logger.error(
            "cannot process %s: %s%s",
            settled.where(),
            settled.error,
            parked,
            extra=settled.log_fields(),
        )
    else:
        if settled.outcome is Outcome.PARKED:
            what = f"parked after {settled.attempt} attempts"
        elif settled.outcome is Outcome.RETRY:
            what = f"rolled back, retry at {retry_at}"
        else:
            what = "its changes were rolled back"
        logger.error(
            "listener failed for %s; %s",
            settled.where(),
            what,
            exc_info=settled.error,
            extra=settled.log_fields(),
        )


def retry_delay(channel: type[HistoryTriggerChannel], attempts: int) -> float:
    """Seconds to wait before attempt ``attempts + 1``."""
    delay = channel.retry_base_delay * (2 ** max(attempts - 1, 0))
    return float(min(delay, channel.retry_max_delay))


def _settle_failure(
    channel: type[HistoryTriggerChannel], row: Notification, exc: BaseException, permanent: bool
) -> Outcome:
    row.attempts += 1
    row.last_error = f"{type(exc).__name__}: {exc}"[:10_000]
    row.last_traceback = "".join(traceback.format_exception(exc))[:50_000]
    if permanent or row.attempts >= channel.max_attempts:
        row.state = str(State.PARKED)
        outcome = Outcome.PARKED
    else:
        row.available_at = timezone.now() + datetime.timedelta(
            seconds=retry_delay(channel, row.attempts)
        )
        outcome = Outcome.RETRY
    row.save(update_fields=["attempts", "last_error", "last_traceback", "state", "available_at"])
    return outcome


def _ensure_connection_usable(using: str) -> None:
    """A failure caused by a lost connection is not the listener's fault: re-raise it."""
    conn = connections[using]
    if conn.connection is None or not conn.is_usable():
        raise DatabaseError("database connection lost while processing a notification")


def handle_notify(
    channel_name: str, payload: str, notify: Any = None, using: str = "default"
) -> Outcome:
    """Handle a NOTIFY of a non-lockable history channel or a django-pgpubsub channel.

    NOTIFYs of lockable history channels only ring the doorbell (see ``Listener``); they are
    processed from the table. Never raises for bad input.
    """
    channel = _pgpubsub.channel_by_listen_name(channel_name)
    if channel is None:
        logger.error("notification on unknown channel %s ignored: %.200s", channel_name, payload)
        return Outcome.FAILED
    if not is_history_channel(channel):
        return _handle_plain(channel, notify)
    if channel.lock_notifications:
        return Outcome.SKIPPED
    started = time.perf_counter()
    try:
        parsed = HistoryPayload.parse(payload)
    except PgpubsubSimplehistoryError as exc:
        logger.error(
            "invalid notification on channel %s: %s",
            channel.name(),
            exc,
            extra={"channel": channel.name(), "outcome": Outcome.FAILED.value},
        )
        return Outcome.FAILED
    error: BaseException | None = None
    try:
        with transaction.atomic(using=using):
            dispatch(resolve(channel, parsed, using=using))
    except Exception as exc:
        error = exc
    settled = Settlement(
        channel=channel,
        outcome=Outcome.PROCESSED if error is None else Outcome.FAILED,
        model=parsed.model_label,
        history_id=str(parsed.history_id),
        history_type=parsed.history_type,
        notification_id=None,
        attempt=1,
        duration=time.perf_counter() - started,
        error=error,
    )
    _log(settled)
    emit([settled])
    return settled.outcome


def _handle_plain(channel: type[Any], notify: Any) -> Outcome:
    try:
        with transaction.atomic():
            _pgpubsub.process_plain_notification(channel, notify)
    except Exception:
        logger.exception("listener of django-pgpubsub channel %s failed", channel.name())
        return Outcome.FAILED
    return Outcome.PROCESSED
