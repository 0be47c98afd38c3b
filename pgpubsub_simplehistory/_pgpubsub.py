"""The one place that touches django-pgpubsub beyond its documented API.

django-pgpubsub keeps its channel registry, its stored-notification model and its notification
processors as module internals. Everything this package needs from them goes through the functions
below, and ``tests/test_upstream_contract.py`` fails if upstream changes any of them under us.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pgpubsub.channel import BaseChannel, TriggerChannel, registry
from pgpubsub.models import Notification

logger = logging.getLogger("pgpubsub_simplehistory")

#: The Postgres setting django-pgpubsub's ``set_notification_context`` writes to.
CONTEXT_SETTING = "pgpubsub.notification_context"

__all__ = [
    "CONTEXT_SETTING",
    "BaseChannel",
    "Notification",
    "TriggerChannel",
    "channel_by_listen_name",
    "notification_table",
    "process_plain_notification",
    "register_callback",
    "registered_channels",
]


def notification_table() -> str:
    """The table in which lockable channels store their notifications."""
    return str(Notification._meta.db_table)


def register_callback(channel: type[BaseChannel], callback: Callable[..., Any]) -> None:
    """Add ``callback`` to django-pgpubsub's registry (what its ``Channel.get`` looks up)."""
    if callback not in registry[channel]:
        registry[channel].append(callback)


def unregister_callback(channel: type[BaseChannel], callback: Callable[..., Any]) -> None:
    if callback in registry.get(channel, []):
        registry[channel].remove(callback)


def registered_channels() -> list[type[BaseChannel]]:
    """Every channel that has at least one subscribed callback, in registration order."""
    return [channel for channel, callbacks in registry.items() if callbacks]


def channel_by_listen_name(name: str) -> type[BaseChannel] | None:
    found: type[BaseChannel] | None = next(
        (channel for channel in registry if channel.listen_safe_name() == name), None
    )
    return found


def channel_label(name: str) -> str:
    """The dotted class name of the channel listening on ``name``, else ``name`` itself."""
    channel = channel_by_listen_name(name)
    return channel.name() if channel is not None else name


class _NoPollWrapper:
    """Stands in for django-pgpubsub's ConnectionWrapper: our loop drains NOTIFYs itself."""

    def poll(self) -> None:
        return None


def process_plain_notification(channel: type[BaseChannel], notify: Any) -> None:
    """Run django-pgpubsub's own processing for a notification of a plain (non-history) channel.

    ``notify`` is a psycopg Notify (``channel``, ``payload``, ``pid``). Raises whatever the
    callbacks raise; the caller owns the transaction.
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
