"""What is waiting in the queue, per channel: for probes (``listener_health``), for draining
before a breaking migration (``pending_notifications``), and for the admin (what is held back by
a parked notification, ``held_back``). Thin over ``queue``."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import connections
from django.utils import timezone

from . import _pgpubsub, queue, registry
from .event import MigrationRef


def channel_label(listen_name: str) -> str:
    """The class path of the history channel with this listen name (else the name itself)."""
    channel = registry.channel_by_listen_name(listen_name)
    return channel.name() if channel is not None else f"(unknown) {listen_name}"


@dataclass(frozen=True)
class ChannelHealth:
    channel: str
    pending: int
    parked: int
    oldest_pending: datetime.datetime | None
    #: Pending notifications claimed by a worker right now (in flight).
    claimed: int = 0

    @property
    def oldest_pending_age(self) -> float | None:
        if self.oldest_pending is None:
            return None
        return (timezone.now() - self.oldest_pending).total_seconds()


@dataclass(frozen=True)
class Health:
    channels: list[ChannelHealth]
    notify_queue_usage: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_health(
    *,
    max_pending: int | None = None,
    max_age: float | None = None,
    max_parked: int | None = None,
    max_queue_usage: float | None = None,
    using: str = "default",
) -> Health:
    """Measure, and list every threshold exceeded (a threshold of None is not checked)."""
    channels = [
        ChannelHealth(channel_label(name), pending, parked, oldest, claimed)
        for name, pending, parked, oldest, claimed in queue.channel_counts(using)
    ]
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_notification_queue_usage()")
        usage = float(cursor.fetchone()[0])
    problems = []
    for ch in channels:
        if max_pending is not None and ch.pending > max_pending:
            problems.append(f"{ch.channel}: {ch.pending} pending > {max_pending}")
        age = ch.oldest_pending_age
        if max_age is not None and age is not None and age > max_age:
            problems.append(f"{ch.channel}: oldest pending is {age:.0f}s old > {max_age:g}s")
        if max_parked is not None and ch.parked > max_parked:
            problems.append(f"{ch.channel}: {ch.parked} parked > {max_parked}")
    if max_queue_usage is not None and usage > max_queue_usage:
        problems.append(f"NOTIFY queue usage {usage:.4f} > {max_queue_usage:g}")
    return Health(channels, usage, problems)


@dataclass(frozen=True)
class PendingGroup:
    """Stored notifications of one channel recorded under one migration state."""

    channel: str
    listen_name: str
    migration: MigrationRef | None
    count: int
    oldest: datetime.datetime | None


def pending_notifications(using: str = "default") -> list[PendingGroup]:
    """Group the stored notifications by channel and by migration state at change time.

    Pending notifications of history channels (parked ones are reported by ``manage.py
    parked``), and the stored notifications of django-pgpubsub's own lockable channels (their
    migration state is django-pgpubsub's ``db_version``).
    """
    groups = [
        PendingGroup(
            channel=channel_label(name),
            listen_name=name,
            migration=MigrationRef(mig_id, app, mig_name) if mig_id is not None else None,
            count=int(count),
            oldest=oldest,
        )
        for name, mig_id, app, mig_name, count, oldest in queue.pending_by_migration(using)
    ]
    for name, label, mig_id, app, mig_name, count, oldest in _pgpubsub.stored_counts(using):
        groups.append(
            PendingGroup(
                channel=label,
                listen_name=name,
                migration=MigrationRef(mig_id, app, mig_name) if mig_id is not None else None,
                count=int(count),
                oldest=oldest,
            )
        )
    return sorted(groups, key=lambda g: (g.listen_name, g.migration.id if g.migration else -1))


def blocking_listen_names() -> list[str]:
    """The listen names of the lockable channels whose parked notifications hold back later
    changes of their object (``parked_blocks_object = True``, the default)."""
    return [
        channel.listen_safe_name()
        for channel in registry.channels()
        if channel.lock_notifications and channel.parked_blocks_object
    ]


@dataclass(frozen=True)
class HeldBack:
    """A pending notification that no worker claims while an earlier notification of its object
    is parked: ``str()`` says so, "held back by parked #318 (object 5)"."""

    notification_id: int
    parked_id: int
    object_id: str

    def __str__(self) -> str:
        return f"held back by parked #{self.parked_id} (object {self.object_id})"


def held_back(ids: Sequence[int], using: str = "default") -> dict[int, HeldBack]:
    """Of these notifications, the pending ones held back by a parked one, by id (one query)."""
    rows = queue.held_back_of(ids, blocking_listen_names(), using)
    return {i: HeldBack(i, parked_id, object_id) for i, parked_id, object_id in rows}


@dataclass(frozen=True)
class Blocker:
    """A parked notification and the pending notifications of its object it holds back."""

    listen_name: str
    channel: str
    parked_id: int
    object_id: str
    held_back: int

    def __str__(self) -> str:
        return f"{self.held_back} held back by parked #{self.parked_id} (object {self.object_id})"


def blockers(using: str = "default", limit: int = 10) -> list[Blocker]:
    """The parked notifications that hold back the most pending ones (at most ``limit``)."""
    return [
        Blocker(name, channel_label(name), parked_id, object_id, count)
        for name, parked_id, object_id, count in queue.held_back_by_parked(
            blocking_listen_names(), limit, using
        )
    ]


def held_back_counts(using: str = "default") -> dict[str, int]:
    """Pending notifications held back by parked ones, per listen name (those with any)."""
    return queue.held_back_counts(blocking_listen_names(), using)


def migration_ref(migration_id: int | None, using: str = "default") -> MigrationRef | None:
    """The ``django_migrations`` row of a ``migration_id_at_change`` (``shop.0003_...``)."""
    if migration_id is None:
        return None
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT id, app, name FROM django_migrations WHERE id = %s", [migration_id])
        row = cursor.fetchone()
    return MigrationRef(*row) if row else None


@dataclass(frozen=True)
class HeldBackSummary:
    """A channel's pending notifications held back by parked ones, and the parked ones that
    hold back the most: "3 held back by parked #318 (object 5), #320 (object 9)"."""

    listen_name: str
    channel: str
    held_back: int
    blockers: list[Blocker]
    #: Further parked notifications that hold back others, not in ``blockers``.
    more: int = 0

    def __str__(self) -> str:
        parts = [f"#{b.parked_id} (object {b.object_id})" for b in self.blockers]
        text = f"{self.held_back} held back by parked " + ", ".join(parts)
        return text + (f" and {self.more} more" if self.more else "")


def held_back_by_channel(
    using: str = "default", per_channel: int = 3
) -> dict[str, HeldBackSummary]:
    """Per listen name with any, what is held back and behind which parked notifications (the
    ``per_channel`` that hold back the most)."""
    counts = held_back_counts(using)
    if not counts:
        return {}
    found: dict[str, list[Blocker]] = {}
    for blocker in blockers(using, limit=10_000):
        found.setdefault(blocker.listen_name, []).append(blocker)
    return {
        name: HeldBackSummary(
            name,
            channel_label(name),
            count,
            found.get(name, [])[:per_channel],
            max(len(found.get(name, [])) - per_channel, 0),
        )
        for name, count in counts.items()
    }
