"""Leases of claimed notifications: the claim leases each one to its worker (draining.py); this
module holds what happens to a lease afterwards, apart from its settlement.

* ``Running``: a batch's notifications not started yet and the one running, shared between the
  worker's thread and its ``Watchdog``.
* ``Watchdog``: a thread of the worker that releases the rest of a batch behind a slow listener
  (their attempt taken back, their channels' doorbells rung) and extends the leases of a batch
  transaction's rows while its listener runs long.
* ``reap``: a lease that ran out is a worker that died holding it: a failed attempt, due again
  after the channel's ``RetryPolicy.after_death`` delay, or parked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, connections

from . import conf, queue
from .failures import WorkerDied
from .models import Notification
from .settlement import Outcome, RetryPolicy, Settlement, announce, logger
from .statistics import Statistics

Channel = type[Any]


class Running:
    """The notifications of a batch not started yet, and the one running: shared between the
    worker's thread and its ``Watchdog``."""

    def __init__(self, rows: list[Notification], worker: str, using: str) -> None:
        self.waiting = list(rows)
        self.worker = worker
        self.using = using
        self.started: float | None = None
        self.lock = threading.Lock()
        #: The rows run (or running) in the open batch transaction, not locked until its end.
        self.together: list[Notification] = []

    def next(self) -> Notification | None:
        with self.lock:
            self.started = None
            if not self.waiting:
                return None
            self.started = time.monotonic()
            return self.waiting.pop(0)

    def has_waiting(self) -> bool:
        with self.lock:
            return bool(self.waiting)

    def give_back(self, row: Notification) -> None:
        with self.lock:
            self.started = None
            self.waiting.insert(0, row)

    def take_waiting(self) -> list[Notification]:
        with self.lock:
            rows, self.waiting = self.waiting, []
            return rows

    def release_rest(self) -> None:
        rows = self.take_waiting()
        if rows:
            queue.release([row.pk for row in rows], self.worker, self.using)


class Watchdog:
    """A thread of the worker that releases the notifications of a batch not started yet once
    the running one's listeners have run ``release_after`` seconds, and rings the doorbell of
    their channels so that an idle worker takes them."""

    def __init__(self, release_after: float | None = None, using: str = "default") -> None:
        self.release_after = conf.release_after() if release_after is None else release_after
        self.using = using
        self._running: Running | None = None
        self._wake = threading.Event()
        self._stop = False
        self._extended = 0.0
        self._thread = threading.Thread(target=self._loop, name="psh-watchdog", daemon=True)
        self._thread.start()

    def watch(self, running: Running | None) -> None:
        self._running = running

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(5)

    def _loop(self) -> None:
        try:
            while not self._stop:
                self._wake.wait(min(0.1, self.release_after / 4))
                running = self._running
                started = running.started if running is not None else None
                if running is None or started is None:
                    continue
                if time.monotonic() - started >= self.release_after:
                    self._release(running)
                    self._extend(running)
        finally:
            connections.close_all()  # this thread's own connections

    def _extend(self, running: Running) -> None:
        """Keep the leases of the rows of an open batch transaction from running out while a
        listener runs long (they are unlocked until its end: another worker would reap them)."""
        rows = list(running.together)
        now = time.monotonic()
        if not rows or now < self._extended + conf.lease_seconds() / 3:
            return
        self._extended = now
        try:
            ids = [row.pk for row in rows]
            queue.extend_leases(ids, running.worker, conf.lease_seconds(), self.using)
        except DatabaseError as exc:
            logger.warning("could not extend the leases of %d notification(s): %s", len(rows), exc)
            connections[self.using].close()

    def _release(self, running: Running) -> None:
        rows = running.take_waiting()
        if not rows:
            return
        try:
            queue.release([row.pk for row in rows], running.worker, self.using)
            with connections[self.using].cursor() as cursor:
                for name in sorted({row.listen_name for row in rows}):
                    cursor.execute("SELECT pg_notify(%s, '')", [name])
        except DatabaseError as exc:  # their leases run out instead; they are reaped
            logger.warning("could not release %d notification(s): %s", len(rows), exc)
            connections[self.using].close()
            return
        logger.info(
            "released %d notification(s) for other workers while a listener runs longer than %.1fs",
            len(rows),
            self.release_after,
        )


def reap(
    channels: Sequence[Channel],
    using: str = "default",
    statistics: Statistics | None = None,
) -> list[Settlement]:
    """End the leases that ran out on ``channels``: each was a failed attempt of a worker that
    died; park the ones whose attempts are exhausted. Announces and returns the settlements."""
    settlements = []
    for channel in channels:
        policy = RetryPolicy.of(channel)
        for row in queue.reap(channel.listen_safe_name(), policy.after_death, using):
            parked = row.state == "parked"
            settlements.append(
                Settlement(
                    channel=channel,
                    outcome=Outcome.PARKED if parked else Outcome.RETRY,
                    model=row.model,
                    history_id=row.history_id,
                    history_type=row.history_type,
                    notification_id=row.pk,
                    attempt=row.attempts,
                    duration=0.0,
                    error=WorkerDied(row.last_error),
                    retry_in=None if parked else policy.delay(row.attempts),
                )
            )
    announce(settlements)
    if statistics is not None:
        statistics.record_all(settlements)
    return settlements
