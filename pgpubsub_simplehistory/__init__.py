"""Postgres LISTEN/NOTIFY events for Django models that survive schema changes.

A history channel's trigger sits on the django-simple-history table and notifies a pointer
``(history model, history_id)``; the listener resolves it under today's schema.

Names are imported lazily: Django imports this package while it loads INSTALLED_APPS, before
models may be defined.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .channel import HistoryTriggerChannel
    from .event import HistoryEvent, MigrationRef
    from .exceptions import (
        ChannelConfigurationError,
        InvalidPayload,
        MissingHistoryRecord,
        PgpubsubSimplehistoryError,
        UnknownModel,
    )
    from .listening import Listener
    from .logs import JsonFormatter
    from .operations import BackfillHistory
    from .records import HistoricalRecords
    from .replaying import ReplayError, ReplayResult, replay
    from .resolution import ResolvedChange, resolve, resolve_record
    from .signals import notification_failed, notification_parked, notification_processed
    from .subscribe import (
        Subscription,
        post_delete_listener,
        post_insert_listener,
        post_save_listener,
        post_update_listener,
        subscribe,
        unsubscribe,
    )

_EXPORTS = {
    "BackfillHistory": "operations",
    "ChannelConfigurationError": "exceptions",
    "HistoricalRecords": "records",
    "HistoryEvent": "event",
    "HistoryTriggerChannel": "channel",
    "InvalidPayload": "exceptions",
    "JsonFormatter": "logs",
    "Listener": "listening",
    "MigrationRef": "event",
    "MissingHistoryRecord": "exceptions",
    "PgpubsubSimplehistoryError": "exceptions",
    "ReplayError": "replaying",
    "ReplayResult": "replaying",
    "ResolvedChange": "resolution",
    "Subscription": "subscribe",
    "UnknownModel": "exceptions",
    "notification_failed": "signals",
    "notification_parked": "signals",
    "notification_processed": "signals",
    "post_delete_listener": "subscribe",
    "post_insert_listener": "subscribe",
    "post_save_listener": "subscribe",
    "post_update_listener": "subscribe",
    "replay": "replaying",
    "resolve": "resolution",
    "resolve_record": "resolution",
    "subscribe": "subscribe",
    "unsubscribe": "subscribe",
}

__all__ = [
    "BackfillHistory",
    "ChannelConfigurationError",
    "HistoricalRecords",
    "HistoryEvent",
    "HistoryTriggerChannel",
    "InvalidPayload",
    "JsonFormatter",
    "Listener",
    "MigrationRef",
    "MissingHistoryRecord",
    "PgpubsubSimplehistoryError",
    "ReplayError",
    "ReplayResult",
    "ResolvedChange",
    "Subscription",
    "UnknownModel",
    "notification_failed",
    "notification_parked",
    "notification_processed",
    "post_delete_listener",
    "post_insert_listener",
    "post_save_listener",
    "post_update_listener",
    "replay",
    "resolve",
    "resolve_record",
    "subscribe",
    "unsubscribe",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
