"""The wake-up protocol: when writers ring the doorbell, and how a worker falls asleep safely.

NOTIFY makes a committing transaction take a lock that serializes every commit that notified,
so writers ring only when it helps (sql/enqueue_v1.sql): never while a worker of the channel is
awake, never while no worker listens. Three advisory-lock key spaces carry that state:

* ``AWAKE_CLASS``: an awake worker holds its channels' keys shared while it drains (held on
  Django's connection, :class:`Doorbell`); a writer probes the key and skips NOTIFY if held;
* ``WRITING_CLASS``: a writer holds its channel's key shared until its transaction ends, so a
  worker can see the writers in flight (:func:`writers_in_flight`);
* ``LISTENING_CLASS``: a worker's listen session holds its channels' keys shared while it is
  connected (:func:`hold_listening_keys`); with none held, writers do not ring either.

A worker is awake from its first claim until a claim finds nothing. A writer that skipped the
doorbell probed the key before the worker released it, so at the release it was in flight:
falling asleep, the worker notes the writers in flight, claims once more at once, without the
key, and again when the last of them has ended (looking every LINGER_POLL seconds for
LINGER_SECONDS, then every AWAIT_POLL seconds between its waits; :meth:`Doorbell.fall_asleep`).
A committed change is visible before its advisory locks are released, so the protocol loses no
doorbell. A probe cancelled while it held a key keeps it until its session ends: writers then
skip the doorbell and a change waits for the next sweep, never longer. (29556 is the durable
subscriptions' writer mark, trigger.MARK_CLASS; sql/enqueue_v1.sql's comments, pinned with
its body, still call this module listening.py.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.db import connections

from .draining import Drained

AWAKE_CLASS = 29555
WRITING_CLASS = 29557
LISTENING_CLASS = 29558
#: Falling asleep, a worker waits at most this long for writers that skipped the doorbell while
#: it was awake, looking every LINGER_POLL seconds ...
LINGER_SECONDS = 0.5
LINGER_POLL = 0.002
#: ... then looks at those still in flight between its waits, this often.
AWAIT_POLL = 0.05
#: A worker with a backlog wakes its sleeping peers at most this often (seconds).
RING_PEERS_INTERVAL = 0.5

_TRY_SHARED = "SELECT pg_try_advisory_lock_shared(%s, hashtext(%s))"
_UNLOCK_SHARED = "SELECT pg_advisory_unlock_shared(%s, hashtext(%s))"
_WRITERS = (
    "SELECT virtualtransaction FROM pg_locks WHERE locktype = 'advisory' "
    "AND classid = %s AND objid = ANY(ARRAY(SELECT hashtext(n)::oid "
    "FROM unnest(%s::text[]) AS n)) AND granted AND pid <> pg_backend_pid()"
)


def hold_listening_keys(cursor: Any, names: list[str]) -> list[str]:
    """On a listen session's ``cursor``: hold each name's listening key for as long as the
    session lives. Returns the names whose key another session holds (their writers ring on
    every change: safe, only slower)."""
    refused = []
    for name in sorted(names):
        # try: a writer probing the key holds it for an instant (or, if it was cancelled right
        # then, until its session ends)
        cursor.execute(_TRY_SHARED, [LISTENING_CLASS, name])
        if not cursor.fetchone()[0]:
            refused.append(name)
    return refused


def writers_in_flight(names: list[str], using: str = "default") -> frozenset[str]:
    """The transactions writing to these channels now (their virtual transaction ids)."""
    if not names:
        return frozenset()
    with connections[using].cursor() as cursor:
        cursor.execute(_WRITERS, [WRITING_CLASS, names])
        return frozenset(str(row[0]) for row in cursor.fetchall())


class Doorbell:
    """One worker's side of the protocol for its stored channels, on Django's connection.

    The worker's claims take the awake keys (:meth:`to_wake`, :meth:`woke`) while it drains,
    it calls :meth:`fall_asleep` when the queue is
    empty, and :meth:`look_again` between its waits while writers are still in flight; the
    last two take its ``drain`` (one drain of the queue, without waking) and stop waiting when
    ``stopping()`` is true.
    """

    def __init__(
        self, names: set[str], using: str = "default", stopping: Callable[[], bool] | None = None
    ) -> None:
        self.names = sorted(names)
        self.using = using
        self.stopping = stopping or (lambda: False)
        self.held: set[str] = set()  # names whose awake key this worker holds
        self._awaiting: frozenset[str] = frozenset()  # writers that may have skipped the bell
        self._awaiting_names: list[str] = []
        self._peers_rung = 0.0

    @property
    def awake(self) -> bool:
        return bool(self.held)

    @property
    def awaiting(self) -> bool:
        """Writers in flight when the worker fell asleep (or started) have not all ended."""
        return bool(self._awaiting)

    def to_wake(self) -> list[str]:
        """The channels whose awake key this worker does not hold: its next claim takes them
        (``queue.claim``, in the claim's own statement), and :meth:`woke` notes those taken.
        A writer probing a key at that instant makes the take fail: that writer rings, and the
        next drain's claim takes the key."""
        return [name for name in self.names if name not in self.held]

    def woke(self, names: list[str]) -> None:
        """The claim took these channels' awake keys (writers now skip NOTIFY)."""
        self.held.update(names)

    def release(self) -> None:
        with connections[self.using].cursor() as cursor:
            for name in sorted(self.held):
                cursor.execute(_UNLOCK_SHARED, [AWAKE_CLASS, name])
        self.held.clear()

    def forget(self) -> None:
        """The session ended: its locks with it."""
        self.held.clear()

    def note_writers(self) -> None:
        """Note the writers in flight now, to claim again once they have ended (on start: a
        writer that saw nobody listening rang no doorbell)."""
        self._awaiting_names = list(self.names)
        self._awaiting = writers_in_flight(self._awaiting_names, self.using)

    def fall_asleep(self, drain: Callable[[], Drained]) -> tuple[int, bool]:
        """Release the awake keys, then claim for the writers that may have skipped the doorbell
        meanwhile: those in flight at the release. Returns (handled, more left)."""
        self.release()
        self.note_writers()
        return self.await_writers(drain, LINGER_SECONDS)

    def look_again(self, drain: Callable[[], Drained]) -> tuple[int, bool]:
        """Asleep with writers in flight: claim once the last of them has ended."""
        self._awaiting &= writers_in_flight(self._awaiting_names, self.using)
        if self._awaiting:
            return 0, False
        return self.await_writers(drain, 0.0)

    def await_writers(self, drain: Callable[[], Drained], seconds: float) -> tuple[int, bool]:
        """Asleep: claim (without the key, so writers ring again) now, and once more after the
        writers noted have ended; look at them every LINGER_POLL seconds for at most
        ``seconds`` (then the worker goes on looking, less often, between its waits).

        A writer that skipped the doorbell probed the key before it was released, so at the
        release it held its in-flight key: either it ended before the writers were noted, and
        the claim after that sees its commit, or it was noted, and the claim after it ended
        sees it (an advisory lock is released after the commit is visible).
        """
        handled = 0
        deadline = time.monotonic() + seconds
        while not self.stopping():
            waited = bool(self._awaiting)
            drained = drain()
            handled += drained.handled
            if drained.handled and not drained.exhausted:
                return handled, True  # a backlog: drain awake, then fall asleep again
            if not waited:
                return handled, False  # claimed after the last of them ended
            self._awaiting &= writers_in_flight(self._awaiting_names, self.using)
            if self._awaiting and time.monotonic() > deadline:
                return handled, False
            if self._awaiting:
                time.sleep(LINGER_POLL)
        return handled, False

    def ring_peers(self) -> None:
        """A backlog: wake the sleeping workers of the channels too (at most every
        RING_PEERS_INTERVAL seconds)."""
        now = time.monotonic()
        if now - self._peers_rung < RING_PEERS_INTERVAL:
            return
        self._peers_rung = now
        with connections[self.using].cursor() as cursor:
            for name in self.names:
                cursor.execute("SELECT pg_notify(%s, '')", [name])
