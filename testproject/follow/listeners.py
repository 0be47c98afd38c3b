"""The follow app's listeners: each records what it received as a ``Delivered`` row."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from django.db import connection

import pgpubsub_simplehistory as psh
from testproject.shop.models import Shipment

from .models import Delivered
from .subscriptions import STARTING, EntryExport, EntryIndex


def _record(name: str, old: Any, new: Any, event: psh.HistoryEvent) -> None:
    Delivered.objects.create(
        subscription=name,
        history_id=event.history_id,
        history_type=event.history_type,
        object_id=event.object_id,
        status=(new or old).status,
        old_status=old.status if old is not None else None,
    )


@psh.post_save_listener(EntryIndex)
@psh.post_delete_listener(EntryIndex)
def index(old: Any, new: Any, event: psh.HistoryEvent) -> None:
    if new is not None and new.status == "explode":
        raise RuntimeError(f"index refuses entry {new.pk}")
    if new is not None and new.status == "crash" and os.environ.get("FOLLOW_CRASH"):
        os.kill(os.getpid(), signal.SIGKILL)
    if new is not None and new.status == "dangling":  # fails at COMMIT: a deferred foreign key
        Shipment.objects.create(order_id=10**9, carrier="dangling entry")
    if new is not None and new.status == "stall":  # the server cancels the statement
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '200ms'")
            cursor.execute("SELECT pg_sleep(2)")
    _record("entry-index", old, new, event)


@psh.post_save_listener(EntryExport)
@psh.post_delete_listener(EntryExport)
def export(old: Any, new: Any, event: psh.HistoryEvent) -> None:
    time.sleep(float(os.environ.get("FOLLOW_EXPORT_SLEEP", "0")))
    _record("entry-export", old, new, event)


def _recorder(name: str) -> Any:
    def record(old: Any, new: Any, event: psh.HistoryEvent) -> None:
        _record(name, old, new, event)

    record.__qualname__ = f"record[{name}]"
    return record


for _subscription in STARTING:  # FOLLOW_STARTS (see subscriptions.py)
    _listener = _recorder(_subscription.subscription_name())
    psh.post_save_listener(_subscription)(_listener)
    psh.post_delete_listener(_subscription)(_listener)
