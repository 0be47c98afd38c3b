"""From save() to listener through the public API, on real Postgres."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from pgpubsub.channel import set_notification_context
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from pgpubsub_simplehistory.models import Notification
from testproject.shop.channels import CustomerChannel, OrderChannel
from testproject.shop.factories import (
    CustomerFactory,
    OrderFactory,
    ProductFactory,
    ShipmentFactory,
)
from testproject.shop.models import Customer, Order, Product, ReceivedEvent

pytestmark = pytest.mark.django_db(transaction=True)


def received(listener_name: str) -> list[ReceivedEvent]:
    return list(ReceivedEvent.objects.filter(listener=listener_name))


def test_insert_update_delete_give_old_and_new(worker):
    order = OrderFactory(total=Decimal("12.50"))
    order.status = "paid"
    order.save()
    order_id = order.pk
    order.delete()
    worker.drain()

    saved = received("on_order_saved")
    assert [e.history_type for e in saved] == ["+", "~"]
    insert, update = saved
    assert insert.old is None
    assert insert.new["status"] == "new" and insert.new["total"] == "12.50"
    assert update.old["status"] == "new"
    assert update.new["status"] == "paid"
    (deleted,) = received("on_order_deleted")
    assert deleted.new is None
    assert deleted.old["status"] == "paid" and deleted.old["pk"] == order_id
    # Resolved instances look like loaded rows.
    for snap in (insert.new, update.old, update.new, deleted.old):
        assert snap["_adding"] is False
        assert snap["_db"] == "default"


def test_lockable_notification_is_stored_then_deleted_when_processed(worker):
    order = OrderFactory()
    stored = Notification.objects.get(listen_name=OrderChannel.listen_safe_name())
    assert stored.history_type == "+"
    assert stored.object_id == str(order.pk)
    assert (stored.model, stored.history_model) == ("shop.Order", "shop.HistoricalOrder")
    assert stored.history_id == str(order.history.get().history_id)
    assert stored.state == "pending" and stored.attempts == 0
    worker.drain()
    assert not Notification.objects.filter(listen_name=OrderChannel.listen_safe_name()).exists()
    assert len(received("on_order_saved")) == 1


def test_non_lockable_channel_stores_nothing(worker):
    CustomerFactory()
    assert not Notification.objects.filter(listen_name=CustomerChannel.listen_safe_name()).exists()
    worker.drain()
    assert len(received("on_customer_created")) == 1


def test_each_decorator_gets_only_its_operation(worker):
    customer = CustomerFactory(name="a")
    customer.name = "b"
    customer.save()
    customer.delete()
    worker.drain()
    assert [(e.history_type, e.new["name"]) for e in received("on_customer_created")] == [
        ("+", "a")
    ]
    (update,) = received("on_customer_updated")
    assert (update.history_type, update.old["name"], update.new["name"]) == ("~", "a", "b")
    # Nobody subscribes to customer deletes: the trigger's condition does not even notify.
    assert ReceivedEvent.objects.filter(history_type="-").count() == 0


def test_trigger_condition_skips_unsubscribed_history_types(worker):
    customer = CustomerFactory()
    worker.drain()
    customer.delete()
    assert worker.process_available(timeout=0.5) == 0


def test_several_decorators_on_one_channel_all_fire(worker):
    product = ProductFactory()
    product.name = "renamed"
    product.save()
    product.delete()
    order = OrderFactory()
    order.delete()
    worker.drain()
    assert [e.history_type for e in received("on_product_changed")] == ["+", "~", "-"]
    assert [e.history_type for e in received("on_order_saved")] == ["+"]
    assert [e.history_type for e in received("on_order_deleted")] == ["-"]


def test_pgpubsub_style_listener_signature_works_unchanged(worker):
    product = ProductFactory(name="x")
    worker.drain()
    (event,) = received("on_product_changed")
    assert event.old is None and event.new["name"] == "x" and event.object_id == str(product.pk)


def test_listener_declaring_history_and_kwargs_gets_everything(worker):
    shipment = ShipmentFactory()
    worker.drain()
    (event,) = received("on_shipment_saved")
    assert event.extra["history_class"] == "HistoricalShipment"
    assert event.extra["kwargs"] == ["context", "new", "old"]
    assert event.new["carrier"] == shipment.carrier


def test_uuid_history_id_resolves(worker):
    shipment = ShipmentFactory()
    record = shipment.history.get()
    worker.drain()
    (event,) = received("on_shipment_saved")
    assert event.history_id == str(record.history_id)
    assert len(event.history_id) == 36


def test_bulk_create_and_bulk_update_with_history_notify(worker):
    customer = CustomerFactory()
    orders = bulk_create_with_history(
        [Order(customer=customer, status=f"bulk{i}") for i in range(5)], Order
    )
    orders = list(Order.objects.filter(customer=customer).order_by("pk"))
    for order in orders:
        order.status = "shipped"
    bulk_update_with_history(orders, Order, ["status"])
    worker.drain()
    events = received("on_order_saved")
    assert sorted(e.history_type for e in events) == ["+"] * 5 + ["~"] * 5
    updates = [e for e in events if e.history_type == "~"]
    assert {e.new["status"] for e in updates} == {"shipped"}
    assert sorted(e.old["status"] for e in updates) == [f"bulk{i}" for i in range(5)]


def test_queryset_update_writes_no_history_and_no_notification(worker):
    order = OrderFactory()
    worker.drain()
    Order.objects.filter(pk=order.pk).update(status="silent")
    assert worker.process_available(timeout=0.5) == 0
    assert Notification.objects.count() == 0


def test_row_larger_than_notify_limit_still_notifies(worker, notify_capture):
    capture = notify_capture(OrderChannel)
    notes = "x" * 20_000
    order = OrderFactory(notes=notes)
    (payload,) = capture()
    assert payload == ""  # a lockable channel's NOTIFY is a doorbell: the row is in the queue
    assert Notification.objects.get().object_id == str(order.pk)
    worker.drain()
    (event,) = received("on_order_saved")
    assert event.new["notes"] == notes
    assert event.object_id == str(order.pk)


def test_excluded_fields_are_never_read_from_the_live_row(worker):
    product = ProductFactory(stock=3)
    product.name = "changed"
    product.save()
    worker.drain()
    assert Product.objects.get().stock == 3  # live row
    for event in received("on_product_changed"):
        for snap in (event.old, event.new):
            if snap is not None:
                assert snap["stock"] == 7  # the model default, not the live 3


def test_notification_context_reaches_the_event(worker):
    from pgpubsub_simplehistory import HistoryEvent, post_save_listener
    from pgpubsub_simplehistory.listeners import unsubscribe

    seen: list[HistoryEvent] = []

    def capture(event: HistoryEvent) -> None:
        seen.append(event)

    post_save_listener(OrderChannel)(capture)
    try:
        set_notification_context({"request_id": "r-42"})
        OrderFactory()
        set_notification_context({})
        worker.drain()
    finally:
        unsubscribe(OrderChannel, capture)
    assert [e.context for e in seen] == [{"request_id": "r-42"}]
    assert seen[0].history_type == "+"


def test_previous_record_is_found_when_history_dates_are_equal(worker):
    customer = CustomerFactory()
    orders = bulk_create_with_history([Order(customer=customer, status="a")], Order)
    order = Order.objects.get(customer=customer)
    order.status = "b"
    # Same history_date for both records: ordering falls back to history_id.
    bulk_update_with_history(
        [order], Order, ["status"], default_date=order.history.get().history_date
    )
    assert orders
    worker.drain()
    update = [e for e in received("on_order_saved") if e.history_type == "~"]
    assert [(e.old["status"], e.new["status"]) for e in update] == [("a", "b")]


def test_update_without_earlier_history_has_no_old(worker):
    order = OrderFactory()
    worker.drain()
    order.history.all().delete()
    order.status = "later"
    order.save()
    worker.drain()
    update = [e for e in received("on_order_saved") if e.history_type == "~"]
    assert len(update) == 1 and update[0].old is None and update[0].new["status"] == "later"


def test_listen_connection_never_sits_in_a_transaction(worker):
    """The LISTEN connection must not hold back the trimming of Postgres's NOTIFY queue."""
    raw = worker._source.raw
    pid = raw.info.backend_pid if hasattr(raw, "info") else raw.get_backend_pid()
    OrderFactory()
    CustomerFactory()
    worker.drain()
    with connection.cursor() as cursor:
        cursor.execute("SELECT state, backend_xid FROM pg_stat_activity WHERE pid = %s", [pid])
        state, xid = cursor.fetchone()
    assert state == "idle" and xid is None
    assert connection.get_autocommit() and not connection.in_atomic_block
    assert len(received("on_order_saved")) == 1 and Customer.objects.count() == 2
