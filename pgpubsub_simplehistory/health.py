"""Listener health: backlog, parked notifications and the NOTIFY queue, for probes."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from django.db import connections
from django.utils import timezone

from . import _pgpubsub
from .models import Notification


@dataclass(frozen=True)
class ChannelHealth:
    channel: str
    pending: int
    parked: int
    oldest_pending: datetime.datetime | None

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
    sql = f"""
        SELECT channel,
               count(*) FILTER (WHERE state = 'pending'),
               count(*) FILTER (WHERE state = 'parked'),
               min(created_at) FILTER (WHERE state = 'pending')
        FROM "{Notification._meta.db_table}" GROUP BY channel ORDER BY channel
    """
    with connections[using].cursor() as cursor:
        cursor.execute(sql)
        rows = cursor.fetchall()
        cursor.execute("SELECT pg_notification_queue_usage()")
        usage = float(cursor.fetchone()[0])
    channels = []
    for name, pending, parked, oldest in rows:
        channels.append(
            ChannelHealth(_pgpubsub.channel_label(name), int(pending), int(parked), oldest)
        )
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
