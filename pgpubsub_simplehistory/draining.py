"""Draining the queue: claim stored notifications, resolve them, run the listeners, settle.

A batch is one transaction. It claims up to ``PGPUBSUB_SIMPLEHISTORY_BATCH_SIZE`` due
notifications (``queue.claim``: oldest first, at most one per object, ``FOR UPDATE SKIP
LOCKED``), loads their history records in one query per channel, and runs each notification's
listeners: the first directly in the transaction, every later one in a savepoint of its own. A
processed notification is deleted in the transaction in which its listeners' writes commit; a
failing later one is settled (retry or park) in the same transaction, a failing first one rolls
the transaction back (nothing else ran in it) and is settled in a new one. Before committing,
the batch claims again (a processed change may have released its object's next one) until a
claim is empty, the batch is full, it ran ``BATCH_SECONDS`` or it is asked to stop. Log lines and
signals follow the commit.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connections, transaction

from . import conf, queue
from .dispatch import dispatch
from .models import Notification
from .payload import HistoryPointer
from .records import LoadedRecords, forget_prepared
from .resolution import load_for, resolve
from .settlement import Outcome, RetryPolicy, Settlement, announce, logger

#: Postgres's PGPROC_MAX_CACHED_SUBXIDS: a transaction with more subtransactions that wrote
#: (released savepoints count until the commit) overflows its cache, and every session's
#: snapshot checks then read pg_subtrans until it ends.
MAX_CACHED_SUBTRANSACTIONS = 64
#: A batch stops taking more work after this many seconds, so that slow listeners still commit
#: (and stop) promptly; the claimed rows it did not reach are released by the commit.
BATCH_SECONDS = 0.5

Channel = type[Any]


@dataclass
class Drained:
    """What a drain did: settlements per outcome, and whether the queue is empty for now."""

    counts: dict[Outcome, int] = field(default_factory=lambda: {o: 0 for o in Outcome})
    #: The last claim found nothing more to do.
    exhausted: bool = False

    @property
    def handled(self) -> int:
        return sum(self.counts.values())

    def add(self, other: Drained) -> None:
        for outcome, n in other.counts.items():
            self.counts[outcome] += n
        self.exhausted = other.exhausted


def drain(
    channels: Sequence[Channel],
    *,
    using: str = "default",
    limit: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Drained:
    """Process due notifications of ``channels``, batch after batch, until none is left,
    ``limit`` were handled or ``should_stop()`` is true."""
    drained = Drained()
    while limit is None or drained.handled < limit:
        if should_stop is not None and should_stop():
            break
        size = (
            conf.batch_size() if limit is None else min(conf.batch_size(), limit - drained.handled)
        )
        batch = process_batch(channels, using=using, limit=size, should_stop=should_stop)
        drained.add(batch)
        if batch.exhausted or not batch.handled:
            break
    return drained


def process_batch(
    channels: Sequence[Channel],
    *,
    using: str = "default",
    limit: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Drained:
    """Claim and process up to ``limit`` notifications in one transaction (see the module).

    If loading the batch's history records fails (a migration changed a history table under the
    running worker, or the table is broken), the transaction is rolled back, nothing is counted
    against the notifications, and the batch runs again resolving each notification on its own,
    so that a broken one fails alone.
    """
    try:
        return _Batch(channels, using, limit, should_stop, preload=True).run()
    except _PreloadFailed as failed:
        _ensure_connection_usable(using)
        forget_prepared(using)  # a migration may have changed the records' columns
        logger.warning(
            "loading the history records of a batch failed (%s); processing its "
            "notifications one by one",
            failed.error,
        )
        return _Batch(channels, using, limit, should_stop, preload=False).run()


class _Batch:
    def __init__(
        self,
        channels: Sequence[Channel],
        using: str,
        limit: int | None,
        should_stop: Callable[[], bool] | None,
        preload: bool,
    ) -> None:
        self.by_name = {c.listen_safe_name(): c for c in channels}
        self.blocking = [c.listen_safe_name() for c in channels if c.parked_blocks_object]
        self.using = using
        self.remaining = limit or conf.batch_size()
        self.should_stop = should_stop
        self.preload = preload
        self.drained = Drained()
        self.settlements: list[Settlement] = []

    def run(self) -> Drained:
        try:
            with transaction.atomic(using=self.using):
                self._claim_and_process()
        except _FirstRowFailed as failed:  # rolled back: settle it in a transaction of its own
            self._add(_settle_after_rollback(failed, self.using))
        announce(self.settlements)
        return self.drained

    def _add(self, settled: Settlement) -> None:
        self.settlements.append(settled)
        self.drained.counts[settled.outcome] += 1

    def _claim_and_process(self) -> None:
        deadline = time.monotonic() + BATCH_SECONDS
        while self.remaining > 0:
            rows = queue.claim(list(self.by_name), self.blocking, self.remaining, self.using)
            if not rows:
                self.drained.exhausted = True
                return
            loaded = self._load(rows) if self.preload else {}
            done: list[int] = []
            for row in rows:
                if self.settlements and (
                    time.monotonic() > deadline or (self.should_stop and self.should_stop())
                ):
                    if done:
                        queue.delete_done(done, self.using)
                    return  # the rest is released, untouched, by the commit
                channel = self.by_name[row.listen_name]
                if self.settlements:
                    settled = _process_row(channel, row, self.using, loaded.get(row.listen_name))
                else:
                    settled = _process_first_row(
                        channel, row, self.using, loaded.get(row.listen_name)
                    )
                self._add(settled)
                self.remaining -= 1
                if settled.outcome is Outcome.PROCESSED:
                    done.append(row.pk)
            if done:
                queue.delete_done(done, self.using)

    def _load(self, rows: list[Notification]) -> dict[str, LoadedRecords]:
        """The claimed rows' history records (each update with its previous record), by
        channel: one query per channel, a prepared statement of the connection.

        Raises _PreloadFailed on a database error (the transaction is then aborted).
        """
        ids: dict[str, list[str]] = {}
        for row in rows:
            ids.setdefault(row.listen_name, []).append(row.history_id)
        prepared = conf.prepared_statements()
        try:
            return {
                name: load_for(self.by_name[name], history_ids, self.using, prepared=prepared)
                for name, history_ids in ids.items()
            }
        except DatabaseError as exc:
            raise _PreloadFailed(exc) from exc


class _PreloadFailed(Exception):
    def __init__(self, error: DatabaseError) -> None:
        super().__init__(str(error))
        self.error = error


def _run(channel: Channel, row: Notification, using: str, loaded: LoadedRecords | None) -> None:
    dispatch(resolve(channel, HistoryPointer.of_notification(row), using=using, loaded=loaded))


class TransactionLeftAborted(Exception):
    """A listener returned normally but left its transaction unusable (it caught a database
    error without rolling back to a savepoint of its own)."""


class _FirstRowFailed(Exception):
    """The first notification of a transaction failed: roll the transaction back, then settle."""

    def __init__(
        self, channel: Channel, row: Notification, error: BaseException, started: float
    ) -> None:
        super().__init__(str(error))
        self.channel, self.row, self.error, self.started = channel, row, error, started


def _process_first_row(
    channel: Channel, row: Notification, using: str, loaded: LoadedRecords | None
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


#: libpq's PQTRANS_INERROR (psycopg2 and psycopg expose it as ``connection.info``).
_PQTRANS_INERROR = 3


def _transaction_aborted(using: str) -> bool:
    wrapper = connections[using]
    if wrapper.needs_rollback:
        return True
    info = getattr(wrapper.connection, "info", None)
    return getattr(info, "transaction_status", None) == _PQTRANS_INERROR


def _settle_after_rollback(failed: _FirstRowFailed, using: str) -> Settlement:
    """Settle a first row whose transaction rolled back, locking its row again.

    In the moment between the rollback and the lock another worker may have claimed it: if it
    processed it, there is nothing left to settle (the outcome is FAILED: this attempt's changes
    were rolled back); if it failed too, both attempts count.
    """
    _ensure_connection_usable(using)
    row, error = failed.row, failed.error
    with transaction.atomic(using=using):
        pending = queue.lock_pending(row.pk, using)
        if pending is not None:
            row = pending
            outcome, retry_in = _settle_failure(failed.channel, row, error, using)
        else:
            outcome, retry_in = Outcome.FAILED, None
    return _settled(
        failed.channel, row, outcome, failed.row.attempts + 1, failed.started, error, retry_in
    )


def _process_row(
    channel: Channel, row: Notification, using: str, loaded: LoadedRecords | None
) -> Settlement:
    """Run the listeners of one claimed row in a savepoint; settle a failure on the row.

    The caller deletes the row when the outcome is PROCESSED, in the same transaction.
    """
    started = time.perf_counter()
    attempt = row.attempts + 1
    try:
        with transaction.atomic(using=using):
            _run(channel, row, using, loaded)
    except Exception as exc:
        _ensure_connection_usable(using)
        outcome, retry_in = _settle_failure(channel, row, exc, using)
        return _settled(channel, row, outcome, attempt, started, exc, retry_in)
    return _settled(channel, row, Outcome.PROCESSED, attempt, started)


def _settled(
    channel: Channel,
    row: Notification,
    outcome: Outcome,
    attempt: int,
    started: float,
    error: BaseException | None = None,
    retry_in: float | None = None,
) -> Settlement:
    return Settlement(
        channel=channel,
        outcome=outcome,
        model=row.model,
        history_id=row.history_id,
        history_type=row.history_type,
        notification_id=row.pk,
        attempt=attempt,
        duration=time.perf_counter() - started,
        error=error,
        retry_in=retry_in,
    )


def _settle_failure(
    channel: Channel, row: Notification, exc: BaseException, using: str
) -> tuple[Outcome, float | None]:
    policy = RetryPolicy.of(channel)
    attempts = row.attempts + 1
    park = policy.parks(attempts, exc)
    delay = policy.delay(attempts)
    queue.settle_failure(
        row,
        error=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
        park=park,
        delay=delay,
        using=using,
    )
    return (Outcome.PARKED, None) if park else (Outcome.RETRY, delay)


def _ensure_connection_usable(using: str) -> None:
    """A failure caused by a lost connection is not the listener's fault: re-raise it."""
    conn = connections[using]
    if conn.connection is None or not conn.is_usable():
        raise DatabaseError("database connection lost while processing a notification")
