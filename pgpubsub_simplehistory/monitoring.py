"""What is waiting in the queue, per channel: for probes (``listener_health``) and for draining
before a breaking migration (``pending_notifications``). Thin over ``queue``."""

from __future__ import annotations

import datetime
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
