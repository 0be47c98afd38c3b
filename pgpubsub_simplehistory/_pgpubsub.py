"""The one module that touches django-pgpubsub beyond subclassing its channels.

django-pgpubsub keeps its channel registry, its stored-notification model, its notification
processors and its recovery convention as module internals. This package needs them for
django-pgpubsub's own (plain) channels, which a worker serves beside history channels, and for
the checks. ``tests/test_upstream_contract.py`` fails when upstream changes any of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.db import connections
from pgpubsub.channel import BaseChannel, ChannelNotFound, TriggerChannel, locate_channel, registry

logger = logging.getLogger("pgpubsub_simplehistory")

#: The Postgres setting django-pgpubsub's ``set_notification_context`` writes to.
CONTEXT_SETTING = "pgpubsub.notification_context"

__all__ = [
    "CONTEXT_SETTING",
    "BaseChannel",
    "TriggerChannel",
    "callbacks_of",
    "locate",
    "plain_channels",
    "plain_notification_table",
    "process_plain_notification",
    "recover_plain_channel",
    "stored_counts",
]


def plain_notification_table() -> str:
    """The table in which django-pgpubsub's lockable channels store their notifications."""
    # Imported here: pgpubsub.models cannot be imported while 'pgpubsub' is missing from
    # INSTALLED_APPS, which system check E004 reports.
    from pgpubsub.models import Notification

    return str(Notification._meta.db_table)


def plain_channels() -> list[type[BaseChannel]]:
    """django-pgpubsub channels with a subscribed callback, in registration order."""
    return [channel for channel, callbacks in registry.items() if callbacks]


def callbacks_of(channel: type[Any]) -> list[Callable[..., Any]]:
    """The callbacks django-pgpubsub's decorators subscribed to ``channel``."""
    return list(registry.get(channel, []))


def locate(path: str) -> type[Any] | None:
    """The class at dotted ``path`` (None when there is none or it cannot be imported)."""
    try:
        found = locate_channel(path)
    except (ChannelNotFound, ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


class _NoPollWrapper:
    """Stands in for django-pgpubsub's ConnectionWrapper: our loop drains NOTIFYs itself."""

    def poll(self) -> None:
        return None


def process_plain_notification(channel: type[BaseChannel], notify: Any) -> None:
    """Run django-pgpubsub's own processing for a NOTIFY of one of its channels.

    ``notify`` has ``channel``, ``payload`` and ``pid``. Raises whatever the callbacks raise; the
    caller owns the transaction.
    """
    from pgpubsub.listen import (
        InvalidNotificationProcessor,
        LockableNotificationProcessor,
        NotificationProcessor,
        NotificationRecoveryProcessor,
    )

    processors: Iterable[type[Any]] = (
        NotificationProcessor,
        LockableNotificationProcessor,
        NotificationRecoveryProcessor,
    )
    for processor_cls in processors:
        try:
            processor = processor_cls(notify, _NoPollWrapper())
        except InvalidNotificationProcessor:
            continue
        processor.process()
        return
    logger.error("no django-pgpubsub processor accepts a notification on %s", channel.name())


class _RecoveryNotify:
    """django-pgpubsub's convention: a notification with an empty payload means "recover"."""

    def __init__(self, channel: type[BaseChannel]) -> None:
        self.channel = channel.listen_safe_name()
        self.payload = ""
        self.pid = 0


def recover_plain_channel(channel: type[BaseChannel]) -> None:
    """Let django-pgpubsub process the notifications it stored for ``channel``."""
    process_plain_notification(channel, _RecoveryNotify(channel))


def stored_counts(using: str) -> list[tuple[Any, ...]]:
    """django-pgpubsub's stored notifications per channel and ``db_version`` (the migration
    state it records): ``(listen name, class path, migration id, app, name, count, oldest)``."""
    sql = f"""
        SELECT n.channel, m.id, m.app, m.name, count(*), min(n.created_at)
        FROM "{plain_notification_table()}" n
        LEFT JOIN django_migrations m ON m.id = n.db_version
        GROUP BY n.channel, m.id, m.app, m.name
    """
    with connections[using].cursor() as cursor:
        cursor.execute(sql)
        rows = cursor.fetchall()
    names = {channel.listen_safe_name(): channel.name() for channel in registry}
    return [
        (name, names.get(name, f"(unknown) {name}"), mig_id, app, mig_name, count, oldest)
        for name, mig_id, app, mig_name, count, oldest in rows
    ]
