"""Listening: wait for NOTIFYs on a dedicated connection, process on Django's connection.

Two connections per listener process:

* the **listen connection** (raw, autocommit, never in a transaction) only LISTENs and waits, so
  Postgres can always trim its NOTIFY queue past it, however long a listener runs;
* Django's connection claims stored notifications and runs the listeners in short transactions.

A NOTIFY of a lockable history channel is a doorbell: the listener then drains the table, oldest
first. The table is also swept every ``sweep_interval`` seconds (retries become due, notifications
sent while no listener was connected), and on start and after every reconnect. When the server
restarts or a backend is killed, the listener reconnects with exponential backoff.
"""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections

from . import _pgpubsub
from .channel import is_history_channel
from .exceptions import ChannelConfigurationError
from .processing import drain, handle_notify

logger = logging.getLogger("pgpubsub_simplehistory")

DEFAULT_SWEEP_INTERVAL = 2.0
DRAIN_BATCH = 200
RECONNECT_MAX_DELAY = 5.0


@dataclass(frozen=True)
class Notify:
    """A NOTIFY as received, independent of the psycopg version."""

    channel: str
    payload: str
    pid: int


def select_channels(names: Sequence[str | type[Any]] | None = None) -> list[type[Any]]:
    """The subscribed channels to listen to: all of them, or those named (and their subclasses)."""
    registered = _pgpubsub.registered_channels()
    if not names:
        chosen = registered
    else:
        from pgpubsub.channel import locate_channel

        wanted = []
        for name in names:
            try:
                wanted.append(locate_channel(name))
            except Exception:
                raise ChannelConfigurationError(f"channel {name!r} not found") from None
        chosen = [c for c in registered if issubclass(c, tuple(wanted))]
    if not chosen:
        asked = f" (asked for {', '.join(map(str, names))})" if names else ""
        raise ChannelConfigurationError(
            "no channel with subscribed listeners to listen to; import your listeners module "
            "in an AppConfig.ready()" + asked
        )
    return chosen


class Listener:
    """Receives notifications for ``channels`` and processes them.

    Args:
        channels: Channel classes or dotted paths; ``None`` for every subscribed channel.
        using: Database alias.
        sweep_interval: Seconds between sweeps of stored notifications
            (``PGPUBSUB_SIMPLEHISTORY_SWEEP_INTERVAL``, default 2).
        recover: Also let django-pgpubsub recover stored notifications of its plain channels.
    """

    def __init__(
        self,
        channels: Sequence[str | type[Any]] | None = None,
        *,
        using: str = "default",
        sweep_interval: float | None = None,
        recover: bool = False,
    ) -> None:
        self.channels = select_channels(channels)
        self.stored = [c for c in self.channels if is_history_channel(c) and c.lock_notifications]
        self._stored_names = {c.listen_safe_name() for c in self.stored}
        self.using = using
        if sweep_interval is None:
            sweep_interval = float(
                getattr(settings, "PGPUBSUB_SIMPLEHISTORY_SWEEP_INTERVAL", DEFAULT_SWEEP_INTERVAL)
            )
        self.sweep_interval = sweep_interval
        self.recover = recover
        self._queue: deque[Notify] = deque()
        self._source: _Source | None = None
        self._next_sweep = 0.0
        self._doorbell = False
        self._more = False
        self._stopping = False

    # -- connection -------------------------------------------------------------------------

    def start(self) -> None:
        """Open the listen connection, LISTEN on every channel, then catch up on the table."""
        self._connect()
        if self.recover:
            for channel in self.channels:
                if not is_history_channel(channel) and channel.lock_notifications:
                    name = channel.listen_safe_name()
                    handle_notify(name, "", Notify(name, "", 0))
        self.sweep()

    def _connect(self) -> None:
        wrapper = connections[self.using]
        with wrapper.wrap_database_errors:  # driver errors become django.db errors
            raw = wrapper.get_new_connection(wrapper.get_connection_params())
            raw.autocommit = True
            cursor = raw.cursor()
            for channel in self.channels:
                cursor.execute(f'LISTEN "{channel.listen_safe_name()}"')
                logger.info("listening on %s", channel.name())
            cursor.close()
        self._source = _source_for(raw, self._queue)

    def _disconnect(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        connections[self.using].close()

    def close(self) -> None:
        self._disconnect()

    # -- processing -------------------------------------------------------------------------

    def sweep(self) -> int:
        """Process every available stored notification of the lockable history channels."""
        processed = 0
        while self.stored and not self._stopping:
            batch = self._drain_some()
            processed += batch
            if batch < DRAIN_BATCH:
                break
        self._next_sweep = time.monotonic() + self.sweep_interval
        return processed

    def process_available(self, timeout: float = 0.0) -> int:
        """Wait up to ``timeout`` seconds for notifications, then process what is available.

        Returns the number of notifications handled (NOTIFYs of other channels plus stored
        notifications processed).
        """
        if self._source is None:
            self.start()
        assert self._source is not None
        if not self._queue and not self._more:
            wait = min(timeout, max(self._next_sweep - time.monotonic(), 0.0))
            self._source.wait(wait)
        handled = 0
        while self._queue and not self._stopping:
            notify = self._queue.popleft()
            if notify.channel in self._stored_names:
                self._doorbell = True
                continue
            handle_notify(notify.channel, notify.payload, notify, using=self.using)
            handled += 1
        if self.stored and (self._doorbell or self._more or time.monotonic() >= self._next_sweep):
            self._doorbell = False
            batch = self._drain_some()
            self._more = batch >= DRAIN_BATCH
            handled += batch
            if not self._more:
                self._next_sweep = time.monotonic() + self.sweep_interval
        return handled

    def _drain_some(self) -> int:
        """Process up to DRAIN_BATCH stored notifications; how many were handled."""
        counts = drain(
            self.stored, limit=DRAIN_BATCH, should_stop=lambda: self._stopping, using=self.using
        )
        return sum(counts.values())

    def run(self, until: Callable[[], bool] | None = None, poll: float = 1.0) -> None:
        """Process notifications until :meth:`stop` is called (or ``until()`` is true).

        Database errors (server restart, killed backend) close both connections; the listener
        reconnects with exponential backoff and sweeps the table before waiting again.
        """
        delay = 0.1
        while not self._stopping and not (until and until()):
            try:
                if self._source is None:
                    self.start()
                    logger.info("listener ready")
                self.process_available(timeout=min(poll, self.sweep_interval))
                delay = 0.1
            except (OperationalError, InterfaceError, DatabaseError, _ConnectionLost) as exc:
                logger.warning("database connection lost (%s); reconnecting in %.1fs", exc, delay)
                self._disconnect()
                self._sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
        self.close()
        logger.info("listener stopped")

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, seconds))

    def stop(self) -> None:
        """Finish the notification in progress, then return from :meth:`run`."""
        if self._stopping:
            logger.warning("second stop signal: exiting now (the open transaction rolls back)")
            raise SystemExit(1)
        logger.info("stopping after the current notification")
        self._stopping = True

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


class _ConnectionLost(Exception):
    pass


class _Source:
    def __init__(self, raw: Any, queue: deque[Notify]) -> None:
        self.raw = raw
        self.queue = queue

    def wait(self, timeout: float) -> None:
        try:
            readable, _, _ = select.select([self.raw.fileno()], [], [], timeout)
            if readable:
                self.read()
        except (OSError, ValueError) as exc:
            raise _ConnectionLost(f"listen connection: {exc}") from exc
        except Exception as exc:
            if _is_connection_error(exc):
                raise _ConnectionLost(f"listen connection: {exc}") from exc
            raise

    def read(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.raw.close()


class _Psycopg2Source(_Source):
    def read(self) -> None:
        self.raw.poll()
        notifies = self.raw.notifies
        while notifies:
            n = notifies.pop(0)
            self.queue.append(Notify(n.channel, n.payload, n.pid))


class _Psycopg3Source(_Source):
    def read(self) -> None:
        pgconn = self.raw.pgconn
        pgconn.consume_input()
        if pgconn.status != 0:  # CONNECTION_OK
            raise _ConnectionLost("listen connection closed by the server")
        while (n := pgconn.notifies()) is not None:
            self.queue.append(Notify(n.relname.decode(), n.extra.decode(), n.be_pid))


def _source_for(raw: Any, queue: deque[Notify]) -> _Source:
    if hasattr(raw, "pgconn"):
        return _Psycopg3Source(raw, queue)
    return _Psycopg2Source(raw, queue)


def _is_connection_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("psycopg", "psycopg2")) and type(exc).__name__ in (
        "OperationalError",
        "InterfaceError",
    )
