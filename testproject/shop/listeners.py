"""The project's listeners: each records what it received as a ``ReceivedEvent`` row.

Writing that row in the listener's transaction makes the effect observable from tests and from
other processes, and it is committed exactly when the notification is marked done.
Test hooks, driven by the data so that they work in listener subprocesses too:
an order whose status is ``"explode"`` makes ``on_order_saved`` raise; one whose status is
``"slow"`` makes it write its row, append a line to ``$SHOP_SLOW_MARKER`` and sleep
``$SHOP_SLOW_SECONDS`` before returning (to kill a listener in the middle of a callback);
``"dangling"`` appends a line to ``$SHOP_DANGLING_MARKER`` and creates a shipment of an order
that does not exist, which fails only at COMMIT (Django's foreign keys are ``DEFERRABLE
INITIALLY DEFERRED``); ``"crash"`` appends a line to ``$SHOP_CRASH_MARKER`` and kills its own
process with SIGKILL (a crash in the middle of a callback).
Each marker line is ``<pid> <history_id>``: one line per run of the callback.

``snapshot`` leaves many-to-many fields out: an instance's m2m manager reads today's rows, not the
record's (the configs listeners record a record's m2m in ``extra``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.forms.models import model_to_dict

import pgpubsub_simplehistory as psh

from .channels import CustomerChannel, OrderChannel, ProductChannel, ShipmentChannel
from .models import Customer, Order, Product, ReceivedEvent, Shipment


def snapshot(instance: Any) -> dict[str, Any] | None:
    if instance is None:
        return None
    data = model_to_dict(instance, fields=[f.name for f in instance._meta.concrete_fields])
    data["pk"] = instance.pk
    data["_adding"] = instance._state.adding
    data["_db"] = instance._state.db
    return _jsonable(data)


def _mark(variable: str, event: psh.HistoryEvent) -> None:
    """Append ``<pid> <history_id>`` to the file named by ``$variable``, if set."""
    marker = os.environ.get(variable)
    if marker:
        with Path(marker).open("a") as f:
            f.write(f"{os.getpid()} {event.history_id}\n")


def _slow_down(event: psh.HistoryEvent) -> None:
    record("on_order_saved:slow", event, None, None)
    _mark("SHOP_SLOW_MARKER", event)
    time.sleep(float(os.environ.get("SHOP_SLOW_SECONDS", "0")))


def _dangle(event: psh.HistoryEvent) -> None:
    _mark("SHOP_DANGLING_MARKER", event)
    Shipment.objects.create(order_id=10**9, carrier="dangling")


def _crash(event: psh.HistoryEvent) -> None:
    _mark("SHOP_CRASH_MARKER", event)
    os.kill(os.getpid(), signal.SIGKILL)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def record(listener: str, event: psh.HistoryEvent, old: Any, new: Any, **extra: Any) -> None:
    ReceivedEvent.objects.create(
        listener=listener,
        channel=event.channel,
        history_type=event.history_type,
        history_id=str(event.history_id),
        object_id=str(event.object_id),
        old=snapshot(old),
        new=snapshot(new),
        extra=_jsonable(extra),
    )


@psh.post_save_listener(OrderChannel)
def on_order_saved(old: Order | None, new: Order | None, event: psh.HistoryEvent) -> None:
    if new is not None and new.status == "explode":
        raise RuntimeError(f"listener refuses order {new.pk} with status 'explode'")
    if new is not None and new.status == "slow":
        _slow_down(event)
    if new is not None and new.status == "dangling":
        _dangle(event)
    if new is not None and new.status == "crash":
        _crash(event)
    record(
        "on_order_saved",
        event,
        old,
        new,
        schema_changed=event.schema_changed,
        replayed=event.replayed,
    )


@psh.post_delete_listener(OrderChannel)
def on_order_deleted(old: Order | None, new: Order | None, event: psh.HistoryEvent) -> None:
    record("on_order_deleted", event, old, new)


@psh.post_insert_listener(CustomerChannel)
def on_customer_created(
    old: Customer | None, new: Customer | None, event: psh.HistoryEvent
) -> None:
    record("on_customer_created", event, old, new)


@psh.post_update_listener(CustomerChannel)
def on_customer_updated(
    old: Customer | None, new: Customer | None, event: psh.HistoryEvent
) -> None:
    record("on_customer_updated", event, old, new)


@psh.post_save_listener(ShipmentChannel)
def on_shipment_saved(history: Any, event: psh.HistoryEvent, **kwargs: Any) -> None:
    record(
        "on_shipment_saved",
        event,
        kwargs["old"],
        kwargs["new"],
        history_class=type(history).__name__,
        kwargs=sorted(kwargs),
    )


@psh.post_save_listener(ProductChannel)
@psh.post_delete_listener(ProductChannel)
def on_product_changed(old: Product | None, new: Product | None) -> None:
    """Written like a django-pgpubsub TriggerChannel listener: only ``old`` and ``new``."""
    instance = new or old
    assert instance is not None
    ReceivedEvent.objects.create(
        listener="on_product_changed",
        channel=ProductChannel.name(),
        history_type="-" if new is None else ("+" if old is None else "~"),
        history_id="",
        object_id=str(instance.pk),
        old=snapshot(old),
        new=snapshot(new),
    )


def on_order_via_subscribe(new: Order | None, event: psh.HistoryEvent) -> None:
    """Subscribed with ``psh.subscribe`` (not a decorator) when ``$SHOP_SUBSCRIBE_DIRECTLY`` is
    set: tests/test_api.py checks that a real worker delivers to it."""
    record("on_order_via_subscribe", event, None, new)


if os.environ.get("SHOP_SUBSCRIBE_DIRECTLY"):
    psh.subscribe(OrderChannel, on_order_via_subscribe, frozenset("+~"))
