"""``async def`` listeners are awaited, inside the notification's transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from pgpubsub_simplehistory import HistoryEvent, post_save_listener, unsubscribe
from pgpubsub_simplehistory.models import Notification
from testproject.shop.channels import OrderChannel
from testproject.shop.factories import OrderFactory
from testproject.shop.models import Order, ReceivedEvent

from .conftest import DrainingWorker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def async_listener(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(OrderChannel, "retry_base_delay", 60.0)

    async def on_order(old: Order | None, new: Order | None, event: HistoryEvent) -> None:
        await asyncio.sleep(0)  # really suspended on an event loop
        await ReceivedEvent.objects.acreate(
            listener="async_on_order",
            channel=event.channel,
            history_type=event.history_type,
            history_id=str(event.history_id),
            object_id=str(event.object_id),
            new={"status": new.status} if new else None,
        )
        if new is not None and new.status == "async-explode":
            raise RuntimeError("async listener refuses")

    post_save_listener(OrderChannel)(on_order)
    lst = DrainingWorker(sweep_interval=3600)
    lst.start()
    yield lst
    lst.close()
    unsubscribe(OrderChannel, on_order)


def test_async_listener_is_awaited_and_its_orm_writes_commit(async_listener):
    order = OrderFactory(status="new")
    order.status = "paid"
    order.save()
    async_listener.drain()
    got = ReceivedEvent.objects.filter(listener="async_on_order")
    assert [(e.history_type, e.new["status"]) for e in got] == [("+", "new"), ("~", "paid")]
    assert not Notification.objects.exists()


def test_async_listener_failure_rolls_back_its_writes_and_keeps_the_notification(async_listener):
    OrderFactory(status="async-explode")
    async_listener.drain()
    assert not ReceivedEvent.objects.filter(listener="async_on_order").exists()
    stored = Notification.objects.get()
    assert stored.attempts == 1
    assert "async listener refuses" in stored.last_error
