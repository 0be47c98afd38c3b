"""Bad input gives one clear error naming what was wrong; the listener keeps running."""

from __future__ import annotations

import json
import logging

import pytest
from django.db import connection
from django.utils import timezone

from pgpubsub_simplehistory.models import Notification
from testproject.shop.channels import CustomerChannel, OrderChannel
from testproject.shop.factories import CustomerFactory, OrderFactory
from testproject.shop.models import ReceivedEvent

pytestmark = pytest.mark.django_db(transaction=True)


def notify(channel: str, payload: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def assert_still_running(worker) -> None:
    CustomerFactory(name="after the bad one")
    worker.drain()
    assert ReceivedEvent.objects.filter(new__name="after the bad one").exists()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("not json at all", "payload is not JSON"),
        ("[1, 2]", "payload is not a JSON object"),
        ('{"foo": 1}', "missing app, model, history_model, history_id, history_type"),
        (
            '{"app": "shop", "model": "Customer", "history_model": "shop.HistoricalCustomer",'
            ' "history_id": 1, "history_type": "?"}',
            "unknown history_type '?'",
        ),
    ],
)
def test_payload_that_is_not_ours(worker, caplog, payload, expected):
    notify(CustomerChannel.listen_safe_name(), payload)
    worker.drain()
    (message,) = errors(caplog)
    assert CustomerChannel.name() in message
    assert expected in message
    assert_still_running(worker)


def test_unknown_model(worker, caplog):
    payload = {
        "app": "warehouse",
        "model": "Crate",
        "history_model": "warehouse.HistoricalCrate",
        "history_id": 5,
        "history_type": "+",
    }
    notify(CustomerChannel.listen_safe_name(), json.dumps(payload))
    worker.drain()
    (message,) = errors(caplog)
    assert "warehouse.Crate" in message and "history_id=5" in message
    assert "app 'warehouse' is not installed" in message
    assert CustomerChannel.name() in message
    assert_still_running(worker)


def test_payload_of_another_model_on_a_channel(worker, caplog):
    order = OrderFactory()
    worker.drain()
    payload = {
        "app": "shop",
        "model": "Order",
        "history_model": "shop.HistoricalOrder",
        "history_id": order.history.get().pk,
        "history_type": "+",
    }
    notify(CustomerChannel.listen_safe_name(), json.dumps(payload))
    worker.drain()
    (message,) = errors(caplog)
    assert "shop.HistoricalOrder" in message and CustomerChannel.name() in message


def test_history_row_gone_keeps_the_stored_notification(worker, caplog):
    order = OrderFactory()
    record = order.history.get()
    order.history.all().delete()  # e.g. clean_old_history ran before the listener
    worker.drain()
    (message,) = errors(caplog)
    assert f"history_id={record.pk}" in message
    assert OrderChannel.name() in message
    assert "shop.Order" in message
    assert "no longer exists" in message
    stored = Notification.objects.get(listen_name=OrderChannel.listen_safe_name())
    assert stored.history_id == str(record.pk)
    assert stored.state == "parked"  # will never resolve: parked at once, with its error
    assert "no longer exists" in stored.last_error
    assert_still_running(worker)


def test_unknown_channel_is_logged(worker, caplog):
    listen = worker._source.raw.cursor()  # a channel no registered class answers to
    listen.execute('LISTEN "pgpubsub_fffff"')
    listen.close()
    notify("pgpubsub_fffff", "{}")
    worker.drain()
    assert any("unknown channel pgpubsub_fffff" in m for m in errors(caplog))
    assert_still_running(worker)


def test_failing_listener_rolls_back_and_keeps_the_notification_for_retry(worker, caplog):
    order = OrderFactory(status="explode")
    worker.drain()
    assert not ReceivedEvent.objects.filter(object_id=str(order.pk)).exists()
    stored = Notification.objects.get(listen_name=OrderChannel.listen_safe_name())
    assert (stored.state, stored.attempts) == ("pending", 1)
    assert "listener refuses order" in stored.last_error
    assert "RuntimeError" in stored.last_traceback
    assert stored.available_at > timezone.now()  # backoff: not retried at once
    (message,) = errors(caplog)
    assert "listener failed" in message and f"history_id={order.history.get().pk}" in message
    worker.sweep()
    assert Notification.objects.get(pk=stored.pk).attempts == 1
    assert_still_running(worker)


def test_invalid_stored_notification_is_parked_and_logged(worker, caplog):
    bogus = Notification.objects.create(
        listen_name=OrderChannel.listen_safe_name(),
        model="shop.Order",
        history_model="shop.HistoricalOrder",
        history_id="not-a-number",
        history_type="+",
        object_id="1",
    )
    worker.sweep()
    (message,) = errors(caplog)
    assert f"notification {bogus.pk}" in message and OrderChannel.name() in message
    assert "'not-a-number' is not a valid primary key of shop.HistoricalOrder" in message
    assert Notification.objects.get(pk=bogus.pk).state == "parked"
    assert_still_running(worker)
