"""How many stored notifications wait, per channel and per migration state at change time.

Used to drain before shipping a breaking migration: deploy, wait until nothing recorded under the
old migration state is pending, then migrate.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db import connections

from . import _pgpubsub
from .event import MigrationRef
from .models import Notification


@dataclass(frozen=True)
class PendingGroup:
    """Stored notifications of one channel recorded under one migration state."""

    channel: str
    channel_name: str
    migration: MigrationRef | None
    count: int
    oldest: datetime.datetime | None


def pending_notifications(using: str = "default") -> list[PendingGroup]:
    """Group the stored notifications by channel and by migration state at change time.

    Pending and retrying notifications of history channels (parked ones are reported by
    ``manage.py parked``), and the stored notifications of django-pgpubsub's own lockable
    channels (their migration state is pgpubsub's ``db_version``).
    """
    sql = f"""
        SELECT n.channel, m.id, m.app, m.name, count(*), min(n.created_at)
        FROM (
            SELECT channel, migration, created_at FROM "{Notification._meta.db_table}"
            WHERE state = 'pending'
            UNION ALL
            SELECT channel, db_version, created_at FROM "{_pgpubsub.notification_table()}"
        ) n
        LEFT JOIN django_migrations m ON m.id = n.migration
        GROUP BY n.channel, m.id, m.app, m.name
        ORDER BY n.channel, m.id NULLS FIRST
    """
    with connections[using].cursor() as cursor:
        cursor.execute(sql)
        rows = cursor.fetchall()
    groups = []
    for channel_name, mig_id, app, name, count, oldest in rows:
        channel = _pgpubsub.channel_by_listen_name(channel_name)
        groups.append(
            PendingGroup(
                channel=channel.name() if channel is not None else f"(unknown) {channel_name}",
                channel_name=channel_name,
                migration=MigrationRef(mig_id, app, name) if mig_id is not None else None,
                count=int(count),
                oldest=oldest,
            )
        )
    return groups
