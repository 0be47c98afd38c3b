"""Draining the queue: claim a batch of stored notifications, run them, settle each.

* **Claim** (``queue.claim``, autocommit): up to ``PGPUBSUB_SIMPLEHISTORY_BATCH_SIZE`` due
  notifications, oldest first, at most one per object. Each one's attempt is counted and the row
  leased to this worker *before* any listener runs, so that a worker that dies in a listener
  leaves a trace: its lease runs out and the notification is reaped as a failed attempt
  (``leases.reap``). Their history records are then loaded in one query per channel.
* **Run together** while that works (a batch of one too: its listeners start with no round trip
  after the claim and the load): the batch's listeners run in one transaction, which ends
  by deleting their notifications in one statement if this worker still holds every one
  (``queue.take_batch``) and commits: no round trip per notification. A listener that fails
  is that notification's failure (settled: retry with backoff, or park), and the others run
  again together; a failure that cannot be pinned on one notification (the COMMIT, a session
  the server ended, a lease another worker took over) sends them to run one by one.
* **Run one by one**: a transaction per notification, whose first statement deletes the row if
  this worker still holds it (``queue.take``; the row stays locked until the commit), then the
  listeners, then the commit. Whatever fails — a listener, the COMMIT itself (a deferred
  constraint), the session — is that notification's failure alone. A notification reaped from
  a dead worker runs so, last in its batch (it may kill this worker too).
* **Group commit**: the notifications' transactions commit without waiting for the WAL flush;
  one durable commit at the end of the batch flushes them all before any is logged, signalled
  or counted. A server crash in between loses those commits whole (the listeners' writes with
  "done"), so the notifications run again: exactly-once database effects hold.
* **Bound the batch**: after ``BATCH_SECONDS`` the notifications not started yet are released
  (their attempt taken back) for any worker; a ``Watchdog`` (leases.py) releases them as soon
  as one listener has run ``PGPUBSUB_SIMPLEHISTORY_RELEASE_AFTER`` seconds, so that a slow
  listener holds back nothing but its own object (and the commit of those run before it in its
  transaction).

Log lines and signals follow each commit (``settlement.announce``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, transaction

from . import conf, queue
from .dispatch import dispatch
from .exceptions import MissingHistoryRecord
from .failures import (
    LEFT_ABORTED,
    TransactionLeftAborted,
    blame,
    classify,
    describe,
    sqlstate,
    transaction_aborted,
    usable,
)
from .leases import Running, Watchdog
from .models import Notification
from .payload import HistoryPointer
from .records import LoadedRecords, forget_prepared
from .resolution import load_for, resolve
from .settlement import (
    Outcome,
    RetryPolicy,
    Settlement,
    announce,
    format_traceback,
    logger,
)
from .statistics import Statistics

#: A batch starts no notification after it ran this long; the rest go back to the queue.
BATCH_SECONDS = 0.5

Channel = type[Any]


def worker_id() -> str:
    """This process as a lease holder: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Drained:
    """What a drain did: settlements per outcome, and whether the queue is empty for now."""

    counts: dict[Outcome, int] = field(default_factory=lambda: {o: 0 for o in Outcome})
    #: The last claim found nothing more to do.
    exhausted: bool = False
    #: Seconds until the soonest retry it scheduled is due (None: it scheduled none).
    next_retry: float | None = None
    #: The channels whose awake key (waking.py) its first claim took.
    woke: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return sum(self.counts.values())

    def add(self, other: Drained) -> None:
        for outcome, n in other.counts.items():
            self.counts[outcome] += n
        self.exhausted = other.exhausted
        self.woke += other.woke
        if other.next_retry is not None:
            self.next_retry = min(other.next_retry, self.next_retry or other.next_retry)

    def count(self, settled: Settlement) -> None:
        self.counts[settled.outcome] += 1
        if settled.retry_in is not None:
            self.next_retry = min(settled.retry_in, self.next_retry or settled.retry_in)


def drain(
    channels: Sequence[Channel],
    *,
    using: str = "default",
    limit: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    worker: str | None = None,
    watchdog: Watchdog | None = None,
    statistics: Statistics | None = None,
    wake: Sequence[str] = (),
) -> Drained:
    """Process due notifications of ``channels``, batch after batch, until none is left,
    ``limit`` were handled or ``should_stop()`` is true. The first claim takes the awake keys
    of the channels named in ``wake`` (``Drained.woke``: waking.py)."""
    drained = Drained()
    while limit is None or drained.handled < limit:
        if should_stop is not None and should_stop():
            break
        size = conf.batch_size()
        if limit is not None:
            size = min(size, limit - drained.handled)
        batch = process_batch(
            channels,
            using=using,
            limit=size,
            should_stop=should_stop,
            worker=worker,
            watchdog=watchdog,
            statistics=statistics,
            wake=wake,
        )
        wake = ()  # the first claim took them
        drained.add(batch)
        if batch.exhausted:
            break
    return drained


def process_batch(
    channels: Sequence[Channel],
    *,
    using: str = "default",
    limit: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    worker: str | None = None,
    watchdog: Watchdog | None = None,
    statistics: Statistics | None = None,
    wake: Sequence[str] = (),
) -> Drained:
    """Claim up to ``limit`` notifications and run them (see the module). Call it outside a
    transaction. ``statistics`` counts what is settled; the claim first takes the awake keys
    of the channels named in ``wake`` (``Drained.woke``)."""
    worker = worker or worker_id()
    by_name = {c.listen_safe_name(): c for c in channels}
    rows, woke = _claim(
        list(by_name),
        [c.listen_safe_name() for c in channels if c.parked_blocks_object],
        limit or conf.batch_size(),
        worker=worker,
        using=using,
        wake=wake,
    )
    drained = Drained(woke=woke)
    if not rows:
        drained.exhausted = True
        return drained
    rows = _isolate_reaped(rows, worker, using)
    loaded = _load(rows, by_name, using)
    running = Running(rows, worker, using)
    settlements: list[Settlement] = []
    deadline = time.monotonic() + BATCH_SECONDS
    if watchdog is not None:
        watchdog.watch(running)

    def stop_here() -> bool:
        return time.monotonic() > deadline or (should_stop is not None and should_stop())

    try:
        # Together while that works (see _run_together); one transaction each from the first
        # failure it cannot pin on one notification, and for a notification reaped from a dead
        # worker (it may kill this one too: nothing else may ride on its transaction).
        together = not any(row.last_error.startswith(queue.DIED) for row in rows)
        unpinned: set[int] = set()  # ran in a transaction that failed for no one notification
        while together and running.has_waiting() and not (settlements and stop_here()):
            done, unpinned = _run_together(by_name, worker, using, loaded, running, stop_here)
            together = not unpinned
            for one in done:
                drained.count(one)
                settlements.append(one)
        while (row := running.next()) is not None:
            # those must run alone now, deadline or not: their attempt is settled this time
            if settlements and stop_here() and row.pk not in unpinned:
                running.give_back(row)
                break
            channel = by_name[row.listen_name]
            settled = _run(channel, row, worker, using, loaded.get(row.listen_name), running)
            if settled is not None:
                drained.count(settled)
                settlements.append(settled)
    finally:
        if watchdog is not None:
            watchdog.watch(None)
        running.release_rest()
        if settlements:
            # Group commit: each notification committed without waiting for the WAL flush;
            # one flush makes the batch durable before anything is reported.
            queue.flush(using)
    announce(settlements)
    if statistics is not None:
        statistics.record_all(settlements)
    return drained


#: SQLSTATEs of a prepared statement Postgres refuses: its result type changed (0A000,
#: "cached plan must not change result type"), or it is gone (26000).
_PREPARED_REFUSED = frozenset({"0A000", "26000"})


def _claim(
    listen_names: list[str],
    blocking: list[str],
    batch: int,
    *,
    worker: str,
    using: str,
    wake: Sequence[str],
) -> tuple[list[Notification], list[str]]:
    """``queue.claim``, a statement prepared once per connection. If Postgres refuses the
    prepared statement (a migration changed the queue table's columns under the running worker:
    a cached plan's result type may not change; or the session lost it), the claim runs
    unprepared, and the next one prepares it anew."""
    lease = conf.lease_seconds()

    def claim(prepared: bool) -> tuple[list[Notification], list[str]]:
        return queue.claim(
            listen_names, blocking, batch, worker=worker, lease_seconds=lease, using=using,
            wake=wake, prepared=prepared,
        )  # fmt: skip

    prepared = conf.prepared_statements()
    try:
        return claim(prepared)
    except DatabaseError as exc:
        if not prepared or sqlstate(exc) not in _PREPARED_REFUSED or not usable(using):
            raise
        forget_prepared(using)
        logger.warning("the prepared claim failed (%s); claiming unprepared", exc)
        return claim(False)


def _isolate_reaped(rows: list[Notification], worker: str, using: str) -> list[Notification]:
    """A notification reaped from a dead worker may be what killed it: it runs last in its
    batch, and at most one such per batch, so that if it kills this worker too no other
    notification counts that attempt."""
    reaped = [row for row in rows if row.last_error.startswith(queue.DIED)]
    if not reaped:
        return rows
    queue.release([row.pk for row in reaped[1:]], worker, using)
    return [row for row in rows if row not in reaped] + reaped[:1]


def _load(
    rows: list[Notification], by_name: dict[str, Channel], using: str
) -> dict[str, LoadedRecords]:
    """The rows' history records (each update with its previous record), by channel: one query
    per channel, a statement prepared once per connection. If that fails (a migration changed a
    history table under the running worker, or the table is broken), each notification loads
    its own record in its transaction, so that a broken one fails alone."""
    ids: dict[str, list[str]] = {}
    for row in rows:
        ids.setdefault(row.listen_name, []).append(row.history_id)
    prepared = conf.prepared_statements()
    try:
        return {
            name: load_for(by_name[name], history_ids, using, prepared=prepared)
            for name, history_ids in ids.items()
        }
    except DatabaseError as exc:
        if not usable(using):
            raise
        forget_prepared(using)  # a migration may have changed the records' columns
        logger.warning(
            "loading the history records of a batch failed (%s); loading each notification's "
            "record on its own",
            exc,
        )
        return {}


def _run_together(
    by_name: dict[str, Channel],
    worker: str,
    using: str,
    loaded: dict[str, LoadedRecords],
    running: Running,
    stop_here: Callable[[], bool],
) -> tuple[list[Settlement], set[int]]:
    """Run the batch's notifications in one transaction, and delete them at its end with one
    statement (``queue.take_batch``): no round trip of its own per notification. It commits
    only if this worker still held every one of them.

    On a failure it rolls back. A listener that raised (or left the transaction aborted, or
    whose statement the server cancelled) is that notification's failure: it is settled, once
    for this attempt, and the others it ran go back to the front of ``running`` to run again.
    A failure it cannot pin on one notification (the COMMIT, the session, a lease taken over)
    sends them all back to run one transaction each (``_run``), where it is settled alone; in
    a transaction that ran only one, any failure but a lease taken over is that one's.
    Returns the settlements (processed ones committed, not yet flushed) and the ids of the
    notifications to run one transaction each (empty: go on together).

    Until ``take_batch`` the rows are not locked: while a listener runs long, the ``Watchdog``
    extends the leases of the rows run in this transaction (``Running.together``), so that no
    other worker reaps them meanwhile."""
    ran: list[tuple[Channel, Notification, float, float]] = []  # channel, row, started, took
    attempted: list[Notification] = []
    running_now: tuple[Channel, Notification, float] | None = None
    running.together = attempted
    try:
        with transaction.atomic(using=using):
            while (row := running.next()) is not None:
                if ran and stop_here():
                    running.give_back(row)
                    break
                attempted.append(row)
                channel = by_name[row.listen_name]
                started = time.perf_counter()
                running_now = (channel, row, started)
                pointer = HistoryPointer.of_notification(row)
                records = loaded.get(row.listen_name)
                dispatch(resolve(channel, pointer, using=using, loaded=records))
                if transaction_aborted(using):
                    raise TransactionLeftAborted(LEFT_ABORTED)
                running_now = None
                ran.append((channel, row, started, time.perf_counter() - started))
            if not ran:
                return [], set()
            taken_at = time.perf_counter()
            taken = queue.take_batch([row.pk for _, row, _, _ in ran], worker, using)
            if len(taken) != len(ran):
                raise _NotHeld()  # another worker took some over (a lease ran out)
    except Exception as exc:
        running.together = []
        blamed = blame(exc, ran, running_now, using)
        if blamed is None and len(attempted) == 1 and not isinstance(exc, _NotHeld):
            # alone in its transaction: whatever failed is its failure, as if run on its own
            if ran:
                blamed = ran[0]
            elif running_now is not None:
                blamed = (*running_now, time.perf_counter() - running_now[2])
        for other in reversed(attempted):
            if blamed is None or other is not blamed[1]:
                running.give_back(other)
        if blamed is None:
            return [], {row.pk for row in attempted}
        channel, row, started, took = blamed
        error = classify(exc, running_now is None, using, took)  # after its listeners: the COMMIT
        return [_settle_failure(channel, row, error, worker, using, started)], set()
    except BaseException:  # a second signal: nothing ran for good, all go back (attempt too)
        running.together = []
        for other in reversed(attempted):
            running.give_back(other)
        raise
    running.together = []
    processed = [
        _settlement(
            channel,
            row,
            Outcome.PROCESSED,
            started,
            lag=taken[row.pk] - (taken_at - started),  # at its listeners' start
            duration=took,
        )
        for channel, row, started, took in ran
    ]
    return processed, set()


class _NotHeld(Exception):
    """A notification of a batch run together was taken over by another worker."""


def _run(
    channel: Channel,
    row: Notification,
    worker: str,
    using: str,
    loaded: LoadedRecords | None,
    running: Running,
) -> Settlement | None:
    """Run one notification in its own transaction and settle it. None when another worker
    took it over (its lease ran out while it waited in this batch)."""
    started = time.perf_counter()
    ran = False
    try:
        with transaction.atomic(using=using):
            lag = queue.take(row, worker, using)
            if lag is None:
                return None
            dispatch(
                resolve(channel, HistoryPointer.of_notification(row), using=using, loaded=loaded)
            )
            if transaction_aborted(using):
                raise TransactionLeftAborted(LEFT_ABORTED)
            ran = True
    except Exception as exc:
        error = classify(exc, ran, using, time.perf_counter() - started)
        return _settle_failure(channel, row, error, worker, using, started)
    return _settlement(channel, row, Outcome.PROCESSED, started, lag=lag)


def _settle_failure(
    channel: Channel,
    row: Notification,
    error: BaseException,
    worker: str,
    using: str,
    started: float,
) -> Settlement:
    policy = RetryPolicy.of(channel)
    park = policy.parks(row.attempts, error)
    delay = policy.delay(row.attempts)
    settled = queue.settle_failure(
        row,
        worker=worker,
        error=describe(error),
        traceback=format_traceback(error),
        park=park,
        delay=delay,
        using=using,
    )
    if not settled:  # another worker took it over meanwhile: this attempt's changes rolled back
        return _settlement(channel, row, Outcome.FAILED, started, error)
    if isinstance(error, MissingHistoryRecord):
        _park_vanished_history(channel, row, using)
    outcome = Outcome.PARKED if park else Outcome.RETRY
    return _settlement(channel, row, outcome, started, error, None if park else delay)


def _park_vanished_history(channel: Channel, row: Notification, using: str) -> None:
    """The object's history is gone (``cascade_delete_history``, a cleanup): park its later
    notifications whose records are gone too, instead of leaving them behind the parked one."""
    later = queue.pending_of_object(row, using)
    if not later:
        return
    existing = load_for(channel, [n.history_id for n in later], using).records
    history_pk = channel.history_model()._meta.pk
    gone = [n for n in later if history_pk.to_python(n.history_id) not in existing]
    for notification in gone:
        queue.park(
            [notification.pk],
            f"MissingHistoryRecord: {notification.history_model} "
            f"history_id={notification.history_id} no longer exists (like the record of "
            f"notification {row.pk} of the same object): its history was deleted",
            using,
        )
    if gone:
        logger.error(
            "parked %d later notification(s) of object %s on %s: its history was deleted",
            len(gone),
            row.object_id,
            channel.name(),
        )


def _settlement(
    channel: Channel,
    row: Notification,
    outcome: Outcome,
    started: float,
    error: BaseException | None = None,
    retry_in: float | None = None,
    lag: float | None = None,
    duration: float | None = None,
) -> Settlement:
    return Settlement(
        channel=channel,
        outcome=outcome,
        model=row.model,
        history_id=row.history_id,
        history_type=row.history_type,
        notification_id=row.pk,
        attempt=row.attempts,
        duration=time.perf_counter() - started if duration is None else duration,
        error=error,
        retry_in=retry_in,
        lag=lag,
    )
