"""The worker: LISTEN, wake up, drain the queue; and the NOTIFY-only path of other channels.

A worker process (``manage.py listen``) holds two connections:

* the **listen connection** (raw, autocommit, never in a transaction) only LISTENs and waits, so
  Postgres can always trim its NOTIFY queue past it, however long the worker runs;
* Django's connection claims stored notifications and runs the listeners in short transactions.

A NOTIFY of a lockable history channel is a doorbell: the worker then drains the queue
(``draining``). The queue is also swept every ``PGPUBSUB_SIMPLEHISTORY_SWEEP_INTERVAL`` seconds
(retries become due, notifications stored while no worker was connected), on start and after
every reconnect. A NOTIFY of a non-lockable history channel is processed from its payload, at
most once; one of a django-pgpubsub channel is handed to django-pgpubsub. When the server
restarts or a backend is killed, the worker reconnects with exponential backoff.
"""

from __future__ import annotations

import contextlib
import select
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction

from . import _pgpubsub, conf, queue, registry
from .channels import is_history_channel, locate
from .dispatch import dispatch
from .draining import Drained, drain, worker_id
from .exceptions import ChannelConfigurationError, PgpubsubSimplehistoryError
from .leases import Watchdog, reap
from .monitoring import held_back_by_channel
from .parking import park_orphans
from .payload import HistoryPointer
from .resolution import resolve
from .settlement import Outcome, Settlement, announce, logger
from .statistics import Statistics, lag_text
from .subscriptions import Followed, Follower, HistorySubscription, is_stream
from .subscriptions import locate as locate_subscription
from .waking import AWAIT_POLL, Doorbell, hold_listening_keys

#: A drain returns to the LISTEN loop after this many seconds (other channels' NOTIFYs wait).
DRAIN_SECONDS = 1.0
#: A drained backlog of at least this many notifications (or one second) gets an INFO line.
BACKLOG = 100
RECONNECT_MAX_DELAY = 5.0
#: A listen name of no channel here is looked at for notifications of removed models when it
#: first shows up, and again after this many seconds (each look reads its pending rows).
ORPHANS_INTERVAL = 60.0


@dataclass(frozen=True)
class Notify:
    """A NOTIFY as received, independent of the psycopg version."""

    channel: str
    payload: str
    pid: int


def select_channels(names: Sequence[str | type[Any]] | None = None) -> list[type[Any]]:
    """The channels with subscribed listeners to serve: all of them, or those named (and their
    subclasses). History channels first, then django-pgpubsub's own."""
    available = [*registry.channels_with_listeners(), *_pgpubsub.plain_channels()]
    if not names:
        chosen = available
    else:
        wanted: list[type[Any]] = []
        for name in names:
            subscription = locate_subscription(name) if isinstance(name, str) else None
            if subscription is not None:
                wanted.extend(subscription.streams())
                continue
            found = locate(name)
            if found is None:
                raise ChannelConfigurationError(f"channel or subscription {name!r} not found")
            wanted.extend(found.streams() if issubclass(found, HistorySubscription) else [found])
        chosen = [c for c in available if issubclass(c, tuple(wanted))]
    if not chosen:
        asked = f" (asked for {', '.join(map(str, names))})" if names else ""
        raise ChannelConfigurationError(
            "no channel with subscribed listeners to serve; import your listeners module "
            "in an AppConfig.ready()" + asked
        )
    return chosen


class Worker:
    """Receives notifications for ``channels`` and processes them.

    Args:
        channels: Channel classes or class paths; ``None`` for every subscribed channel.
        using: Database alias.
        sweep_interval: Seconds between sweeps of stored notifications
            (``PGPUBSUB_SIMPLEHISTORY_SWEEP_INTERVAL``, default 2).
        recover: Also let django-pgpubsub recover stored notifications of its own channels.
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
        self._by_name = {c.listen_safe_name(): c for c in self.channels}
        self.using = using
        self.sweep_interval = conf.sweep_interval() if sweep_interval is None else sweep_interval
        self.recover = recover
        self._queue: deque[Notify] = deque()
        self._source: _Source | None = None
        self._next_sweep = 0.0
        self._doorbell = False
        self._more = False
        self._stopping = False
        self.worker_id = worker_id()
        self._watchdog: Watchdog | None = None
        self.statistics = Statistics(using) if conf.statistics() else None
        self._next_summary = time.monotonic() + conf.summary_interval()
        self._busy: tuple[float, int] | None = None  # (since, handled) while draining a backlog
        self._bell = Doorbell(self._stored_names, using, stopping=lambda: self._stopping)
        self._followers: list[Follower] | None = None  # durable subscriptions, made on start
        self._followed_more = False
        self._progress_at = 0.0
        self._next_orphans = 0.0
        self._examined: set[str] = set()  # listen names park_orphans looked at

    # -- connection -------------------------------------------------------------------------

    def start(self) -> None:
        """Open the listen connection, LISTEN on every channel, then catch up on the queue.

        Writers ring no doorbell while no worker listens (sql/enqueue_v1.sql): the listen
        connection holds each stored channel's listening key from the start, then the worker
        notes the writers in flight (a writer that saw nobody listening is one of them) before
        it sweeps, and claims again once they have ended, as when it falls asleep."""
        self._connect()
        if self.stored and self._watchdog is None:
            self._watchdog = Watchdog(using=self.using)
        if self.recover:
            for channel in self.channels:
                if not is_history_channel(channel) and channel.lock_notifications:
                    self._handle_plain(channel, None)
        self._bell.note_writers()
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
            for name in hold_listening_keys(cursor, sorted(self._stored_names)):
                logger.warning(
                    "%s: could not take the listening key (another session holds it); "
                    "writers ring the doorbell on every change until this worker reconnects",
                    name,
                )
            cursor.close()
        self._source = _source_for(raw, self._queue)

    def _disconnect(self) -> None:
        self._bell.forget()  # session locks end with the session
        self._followers = None  # their horizons start again with the new session
        if self._source is not None:
            self._source.close()
            self._source = None
        connections[self.using].close()

    def close(self) -> None:
        if self.statistics is not None:
            with contextlib.suppress(DatabaseError):
                self.statistics.flush()
        self._disconnect()
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None

    # -- processing -------------------------------------------------------------------------

    def sweep(self) -> int:
        """Reap the leases of dead workers, park what no channel will ever take, then drain the
        due stored notifications of the lockable history channels for up to DRAIN_SECONDS (the
        loop of :meth:`process_available` drains the rest, between other channels' NOTIFYs)."""
        handled = 0
        self._next_sweep = time.monotonic() + self.sweep_interval
        if self.stored:
            handled += len(reap(self.stored, self.using, self.statistics))
            if time.monotonic() >= self._next_orphans:  # look at every name again
                self._next_orphans = time.monotonic() + ORPHANS_INTERVAL
                self._examined.clear()
            park_orphans(self.using, self._examined)
        if self.stored and not self._stopping:  # one drain; the loop goes on while there is more
            drained = self._drain()
            handled += drained.handled
            self._more = not drained.exhausted
        return handled

    def process_available(self, timeout: float = 0.0) -> int:
        """Wait up to ``timeout`` seconds for notifications, then process what is available.

        Returns the number of notifications handled (NOTIFYs of other channels plus stored
        notifications settled).
        """
        if self._source is None:
            self.start()
        assert self._source is not None
        if not self._queue and not self._more and not self._followed_more:
            wait = min(timeout, max(self._next_sweep - time.monotonic(), 0.0))
            if self._followers:
                wait = min(wait, conf.subscription_poll())
            if self._bell.awaiting:
                wait = min(wait, AWAIT_POLL)
            if self._bell.awake:  # nothing left: fall asleep first (writers skip NOTIFY)
                wait = 0.0
            self._source.wait(wait)
        handled = 0
        while self._queue and not self._stopping:
            notify = self._queue.popleft()
            if notify.channel in self._stored_names:
                self._doorbell = True
                continue
            self.handle_notify(notify)
            handled += 1
        self._housekeeping()
        handled += self._follow()
        if self.stored and time.monotonic() >= self._next_sweep:
            self._doorbell = self._more = False
            handled += self.sweep()
        elif self.stored and (self._doorbell or self._more):
            self._doorbell = False
            drained = self._drain()
            self._more = not drained.exhausted
            handled += drained.handled
        if self._bell.awake and not self._more:
            asleep, more = self._bell.fall_asleep(self._drain_asleep)
            handled += asleep
            self._more = self._more or more
        elif self._bell.awaiting and not self._bell.awake:  # writers in flight at falling asleep
            asleep, more = self._bell.look_again(self._drain_asleep)
            handled += asleep
            self._more = self._more or more
        return handled

    # -- durable subscriptions ---------------------------------------------------------------

    def _follow(self) -> int:
        """Move every durable subscription this worker serves, for at most DRAIN_SECONDS."""
        if self._followers is None:
            self._followers = [
                Follower(stream, self.worker_id, self.using)
                for stream in self.stored
                if is_stream(stream)
            ]
        if not self._followers:
            return 0
        until = time.monotonic() + DRAIN_SECONDS
        handled = 0
        self._followed_more = False
        for follower in self._followers:
            while not self._stopping:
                followed = follower.follow()
                handled += followed.delivered + followed.stored
                if self.statistics is not None and followed.delivered:
                    self.statistics.count(follower.stream, Outcome.PROCESSED, followed.delivered)
                self._report_progress(follower, followed)
                if followed.caught_up:
                    break
                if time.monotonic() > until:
                    self._followed_more = True
                    break
        return handled

    def _report_progress(self, follower: Follower, followed: Followed) -> None:
        """While catching up: an INFO line every 5 s (position, share, rate)."""
        now = time.monotonic()
        if followed.caught_up or now - self._progress_at < 5.0:
            return
        self._progress_at = now
        share = 100.0 * followed.position / followed.horizon if followed.horizon else 100.0
        logger.info(
            "%s: catching up, at history id %d of %d (%.0f%%), %.0f records/s",
            follower.stream.name(),
            followed.position,
            followed.horizon,
            share,
            follower.rate.value or 0.0,
            extra={"channel": follower.stream.name(), "outcome": "catching up"},
        )

    # -- draining (awake, or asleep: see waking.py) ---------------------------------------

    def _drain_asleep(self) -> Drained:
        return self._drain(wake=False)

    def _drain(self, wake: bool = True) -> Drained:
        until = time.monotonic() + DRAIN_SECONDS
        drained = drain(
            self.stored,
            using=self.using,
            should_stop=lambda: self._stopping or time.monotonic() > until,
            worker=self.worker_id,
            watchdog=self._watchdog,
            statistics=self.statistics,
            wake=self._bell.to_wake() if wake else (),  # writers skip NOTIFY while it drains
        )
        self._bell.woke(drained.woke)
        self._note_backlog(drained)
        if drained.handled and not drained.exhausted:
            self._bell.ring_peers()
        if drained.next_retry is not None:  # a retry is due before the next sweep: sweep then
            self._next_sweep = min(self._next_sweep, time.monotonic() + drained.next_retry)
        return drained

    def _note_backlog(self, drained: Drained) -> None:
        """One INFO line when a backlog is drained: how many, how long."""
        now = time.monotonic()
        if drained.handled:
            since, count = self._busy or (now, 0)
            self._busy = (since, count + drained.handled)
        if drained.exhausted and self._busy is not None:
            since, count = self._busy
            self._busy = None
            if count >= BACKLOG or now - since >= 1.0:
                logger.info("drained %d notification(s) in %.1f s", count, now - since)

    def _housekeeping(self) -> None:
        """Flush the statistics and write the summary lines when they are due."""
        if self.statistics is None:
            return
        self.statistics.flush_if_due()
        if time.monotonic() < self._next_summary:
            return
        self._next_summary = time.monotonic() + conf.summary_interval()
        summary = self.statistics.take_summary()
        held = {
            name: text
            for name, text in held_back_by_channel(self.using).items()
            if name in self._stored_names
        }
        if not summary and not held:
            return
        backlog = {
            name: (pending, parked)
            for name, pending, parked, *_ in queue.channel_counts(self.using)
        }
        for channel, tally in summary.items():
            name = channel.listen_safe_name()
            pending, parked = backlog.get(name, (0, 0))
            logger.info(
                "%s: %d processed, %d retried, %d parked, %d failed in the last %.0f s; %s; "
                "%d pending, %d parked%s",
                channel.name(),
                tally.processed,
                tally.retried,
                tally.parked,
                tally.failed,
                conf.summary_interval(),
                lag_text(tally),
                pending,
                parked,
                f" ({held.pop(name)})" if name in held else "",
                extra={"channel": channel.name(), "outcome": "summary"},
            )
        for summary_of_held in held.values():  # nothing settled, yet changes wait
            logger.warning(
                "%s: %s: retry or purge the parked ones (manage.py parked)",
                summary_of_held.channel,
                summary_of_held,
                extra={"channel": summary_of_held.channel, "outcome": "held back"},
            )

    def handle_notify(self, notify: Notify) -> Outcome:
        """Process a NOTIFY of a non-lockable history channel or of a django-pgpubsub channel.

        Never raises for bad input: whatever the payload, it is logged and the worker goes on.
        """
        channel = self._by_name.get(notify.channel)
        if channel is None:
            logger.error(
                "notification on unknown channel %s ignored: %.200s", notify.channel, notify.payload
            )
            return Outcome.FAILED
        if not is_history_channel(channel):
            return self._handle_plain(channel, notify)
        started = time.perf_counter()
        try:
            pointer = HistoryPointer.parse(notify.payload)
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
            with transaction.atomic(using=self.using):
                dispatch(resolve(channel, pointer, using=self.using))
        except Exception as exc:
            error = exc
        settled = Settlement(
            channel=channel,
            outcome=Outcome.PROCESSED if error is None else Outcome.FAILED,
            model=pointer.model,
            history_id=str(pointer.history_id),
            history_type=pointer.history_type,
            notification_id=None,
            attempt=1,
            duration=time.perf_counter() - started,
            error=error,
        )
        announce([settled])
        if self.statistics is not None:
            self.statistics.record(settled)
        return settled.outcome

    def _handle_plain(self, channel: type[Any], notify: Notify | None) -> Outcome:
        try:
            with transaction.atomic(using=self.using):
                if notify is None:
                    _pgpubsub.recover_plain_channel(channel)
                else:
                    _pgpubsub.process_plain_notification(channel, notify)
        except Exception:
            logger.exception("listener of django-pgpubsub channel %s failed", channel.name())
            return Outcome.FAILED
        return Outcome.PROCESSED

    def run(self, until: Callable[[], bool] | None = None, poll: float = 1.0) -> None:
        """Process notifications until :meth:`stop` is called (or ``until()`` is true).

        Database errors (server restart, killed backend) close both connections; the worker
        reconnects with exponential backoff and sweeps the queue before waiting again.
        """
        delay = 0.1
        while not self._stopping and not (until and until()):
            try:
                if self._source is None:
                    self.start()
                    logger.info("worker ready")
                self.process_available(timeout=min(poll, self.sweep_interval))
                delay = 0.1
            except (OperationalError, InterfaceError, DatabaseError, _ConnectionLost) as exc:
                logger.warning("database connection lost (%s); reconnecting in %.1fs", exc, delay)
                self._disconnect()
                self._sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
        self.close()
        logger.info("worker stopped")

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
    """Reads NOTIFYs from the listen connection into a queue."""

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
            self.queue.append(
                Notify(
                    n.relname.decode(errors="replace"), n.extra.decode(errors="replace"), n.be_pid
                )
            )


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
