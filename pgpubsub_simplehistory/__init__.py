"""Postgres LISTEN/NOTIFY events for Django models that survive schema changes.

A history channel's trigger sits on the django-simple-history table and stores or notifies a
pointer ``(history model, history_id)``; a worker resolves it under today's schema and runs the
listeners.

Names are imported lazily: Django imports this package while it loads INSTALLED_APPS, before
models may be defined. ``__all__`` is the one list of the public API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers; tests/test_api.py checks it lists __all__ exactly
    from .channels import HistoryTriggerChannel
    from .event import HistoryEvent, MigrationRef
    from .exceptions import (
        ChannelConfigurationError,
        InvalidPayload,
        MissingHistoryRecord,
        PgpubsubSimplehistoryError,
        UnknownModel,
    )
    from .failures import TransactionLeftAborted
    from .listeners import (
        post_delete_listener,
        post_insert_listener,
        post_save_listener,
        post_update_listener,
        subscribe,
        unsubscribe,
    )
    from .listening import Worker
    from .logs import JsonFormatter
    from .operations import BackfillHistory
    from .registry import Listener
    from .replaying import ReplayError, ReplayResult, replay
    from .resolution import ResolvedChange, resolve, resolve_record
    from .settlement import RetryPolicy
    from .signals import notification_failed, notification_parked, notification_processed
    from .subscriptions import HistorySubscription
    from .tracking import HistoricalRecords, register

__all__ = [
    "BackfillHistory",
    "ChannelConfigurationError",
    "HistoricalRecords",
    "HistoryEvent",
    "HistorySubscription",
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
    "RetryPolicy",
    "TransactionLeftAborted",
    "UnknownModel",
    "Worker",
    "notification_failed",
    "notification_parked",
    "notification_processed",
    "post_delete_listener",
    "post_insert_listener",
    "post_save_listener",
    "post_update_listener",
    "register",
    "replay",
    "resolve",
    "resolve_record",
    "subscribe",
    "unsubscribe",
]

#: The modules the names of ``__all__`` live in.
_MODULES = (
    "channels",
    "draining",
    "event",
    "exceptions",
    "failures",
    "listening",
    "logs",
    "operations",
    "registry",
    "replaying",
    "resolution",
    "settlement",
    "signals",
    "subscriptions",
    "listeners",
    "tracking",
)


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _MODULES:
            namespace = vars(importlib.import_module(f".{module}", __name__))
            if name in namespace:
                globals()[name] = namespace[name]
                return namespace[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
