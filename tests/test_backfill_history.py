"""``BackfillHistory`` on a table with many history rows per object."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from pgpubsub_simplehistory import BackfillHistory
from testproject.shop.factories import OrderFactory
from testproject.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def run(operation: BackfillHistory, app_label: str = "shop") -> None:
    state = MigrationExecutor(connection).loader.project_state()
    with connection.schema_editor() as editor:
        operation.database_forwards(app_label, editor, state, state)


@pytest.fixture
def orders_with_history():
    """Three orders with five records each; the last one deleted (its records remain)."""
    orders = []
    for _ in range(3):
        order = OrderFactory(status="s0")
        for i in range(1, 4):
            order.status = f"s{i}"
            order.save()
        orders.append(order)
    gone = orders[-1]
    gone_id = gone.pk
    gone.delete()
    for order in orders[:2]:
        Order.objects.filter(pk=order.pk).update(notes=f"live notes {order.pk}")
    return orders[:2], gone_id


def test_from_live_copies_the_live_row_into_every_record(orders_with_history):
    live, gone_id = orders_with_history
    run(BackfillHistory("Order", fields=["notes"], from_live=True))
    for order in live:
        notes = set(order.history.values_list("notes", flat=True))
        assert notes == {f"live notes {order.pk}"}
        assert order.history.count() == 4
    gone_notes = set(Order.history.filter(id=gone_id).values_list("notes", flat=True))
    assert gone_notes == {""}  # no live row: untouched


def test_function_computes_each_record_from_itself(orders_with_history):
    run(
        BackfillHistory(
            "Order", fields=["notes"], function=lambda r: {"notes": f"was {r.status}"}, batch_size=3
        )
    )
    for record in Order.history.all():
        assert record.notes == f"was {record.status}"
    assert Order.history.count() == 13


def test_from_live_then_function_for_deleted_objects(orders_with_history):
    live, gone_id = orders_with_history
    run(
        BackfillHistory(
            "Order",
            fields=["notes"],
            from_live=True,
            function=lambda r: {"notes": "object deleted"},
        )
    )
    assert set(Order.history.filter(id=gone_id).values_list("notes", flat=True)) == {
        "object deleted"
    }
    assert set(Order.history.filter(id=live[0].pk).values_list("notes", flat=True)) == {
        f"live notes {live[0].pk}"
    }


def test_bad_arguments_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="needs at least one field"):
        BackfillHistory("Order", fields=[], from_live=True)
    with pytest.raises(ValueError, match="needs from_live=True, a function, or both"):
        BackfillHistory("Order", fields=["notes"])
    with pytest.raises(ValueError, match=r"shop\.Order has no field 'nope'"):
        run(BackfillHistory("Order", fields=["nope"], from_live=True))


def test_function_returning_unlisted_fields_is_refused(orders_with_history):
    with pytest.raises(ValueError, match=r"not listed in fields=: \['status'\]"):
        run(BackfillHistory("Order", fields=["notes"], function=lambda r: {"status": "x"}))


def test_deconstruct_round_trips_and_describes():
    op = BackfillHistory("Order", fields=["notes"], from_live=True, batch_size=10)
    name, args, kwargs = op.deconstruct()
    assert (name, args) == ("BackfillHistory", ["Order"])
    assert BackfillHistory(*args, **kwargs).deconstruct() == (name, args, kwargs)
    assert op.describe() == "Back-fill notes of the history of Order"
