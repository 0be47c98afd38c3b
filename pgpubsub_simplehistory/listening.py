"""Listening: LISTEN on the channels' Postgres channels and hand each NOTIFY to processing.

One Django connection per listener process, in autocommit: it LISTENs, and processing runs its
short transactions on it too, so it never sits idle in a transaction (which would stop Postgres
from trimming the NOTIFY queue). On start, and every ``sweep_interval`` seconds, stored
notifications of lockable history channels are swept, so nothing stored while no listener was
connected waits for a new NOTIFY.
"""

from __future__ import annotations

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
from django.db import connections

from . import _pgpubsub
from .channel import is_history_channel
from .exceptions import ChannelConfigurationError
from .processing import handle_notify, sweep

logger = logging.getLogger("pgpubsub_simplehistory")

DEFAULT_SWEEP_INTERVAL = 5.0


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
        raise ChannelConfigurationError(
            "no channel with subscribed listeners to listen to; import your listeners module "
            "in an AppConfig.ready()"
            + (f" (asked for {', '.join(map(str, names))})" if names else "")
        )
    return chosen


class Listener:
    """Receives notifications for ``channels`` on one connection and processes them.

    Args:
        channels: Channel classes or dotted paths; ``None`` for every subscribed channel.
        using: Database alias to listen on.
        sweep_interval: Seconds between sweeps of stored notifications
            (``PGPUBSUB_SIMPLEHISTORY_SWEEP_INTERVAL``, default 5).
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
        self.using = using
        if sweep_interval is None:
            sweep_interval = float(
                getattr(settings, "PGPUBSUB_SIMPLEHISTORY_SWEEP_INTERVAL", DEFAULT_SWEEP_INTERVAL)
            )
        self.sweep_interval = sweep_interval
        self.recover = recover
        self._queue: deque[Notify] = deque()
        self._source: _Source | None = None
        self._last_sweep = 0.0
        self._stopping = False

    @property
    def connection(self) -> Any:
        return connections[self.using]

    def start(self) -> None:
        """LISTEN on every channel, then sweep what was stored meanwhile."""
        conn = self.connection
        conn.ensure_connection()
        if not conn.get_autocommit():
            raise ChannelConfigurationError("the listener's connection must be in autocommit")
        with conn.cursor() as cursor:
            for channel in self.channels:
                cursor.execute(f'LISTEN "{channel.listen_safe_name()}"')
                logger.info("listening on %s", channel.name())
        self._source = _source_for(conn.connection, self._queue)
        if self.recover:
            for channel in self.channels:
                if not is_history_channel(channel) and channel.lock_notifications:
                    handle_notify(
                        channel.listen_safe_name(), "", Notify(channel.listen_safe_name(), "", 0)
                    )
        self.sweep()

    def sweep(self) -> None:
        for channel in self.channels:
            if is_history_channel(channel) and channel.lock_notifications:
                sweep(channel)
        self._last_sweep = time.monotonic()

    def process_available(self, timeout: float = 0.0) -> int:
        """Wait up to ``timeout`` seconds for notifications; process all that arrived."""
        if self._source is None:
            self.start()
        assert self._source is not None
        if not self._queue:
            self._source.wait(timeout)
        handled = 0
        while self._queue and not self._stopping:
            notify = self._queue.popleft()
            handle_notify(notify.channel, notify.payload, notify)
            handled += 1
        if time.monotonic() - self._last_sweep >= self.sweep_interval:
            self.sweep()
        return handled

    def run(self, until: Callable[[], bool] | None = None, poll: float = 1.0) -> None:
        """Process notifications until :meth:`stop` is called (or ``until()`` is true)."""
        self.start()
        logger.info("listener ready")
        while not self._stopping and not (until and until()):
            self.process_available(timeout=min(poll, self.sweep_interval))
        self.close()

    def stop(self, *_: Any) -> None:
        """Finish the notification in progress, then return from :meth:`run`."""
        if self._stopping:
            raise SystemExit(1)
        logger.info("stopping after the current notification")
        self._stopping = True

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        conn = self.connection
        if conn.connection is not None and not conn.in_atomic_block:
            with conn.cursor() as cursor:
                cursor.execute("UNLISTEN *")


class _Source:
    def __init__(self, raw: Any, queue: deque[Notify]) -> None:
        self.raw = raw
        self.queue = queue

    def wait(self, timeout: float) -> None:
        readable, _, _ = select.select([self.raw.fileno()], [], [], timeout)
        if readable:
            self.read()
        else:
            self.collect()

    def read(self) -> None:
        raise NotImplementedError

    def collect(self) -> None:
        """Move notifications already received (during queries) into the queue."""

    def close(self) -> None:
        return None


class _Psycopg2Source(_Source):
    def read(self) -> None:
        self.raw.poll()
        self.collect()

    def collect(self) -> None:
        notifies = self.raw.notifies
        while notifies:
            n = notifies.pop(0)
            self.queue.append(Notify(n.channel, n.payload, n.pid))


class _Psycopg3Source(_Source):
    def __init__(self, raw: Any, queue: deque[Notify]) -> None:
        super().__init__(raw, queue)
        # Notifications that arrive while a query runs are delivered to handlers.
        raw.add_notify_handler(self._on_notify)

    def _on_notify(self, n: Any) -> None:
        self.queue.append(Notify(n.channel, n.payload, n.pid))

    def read(self) -> None:
        pgconn = self.raw.pgconn
        pgconn.consume_input()
        while (n := pgconn.notifies()) is not None:
            self.queue.append(Notify(n.relname.decode(), n.extra.decode(), n.be_pid))

    def close(self) -> None:
        self.raw.remove_notify_handler(self._on_notify)


def _source_for(raw: Any, queue: deque[Notify]) -> _Source:
    if hasattr(raw, "add_notify_handler"):
        return _Psycopg3Source(raw, queue)
    return _Psycopg2Source(raw, queue)
