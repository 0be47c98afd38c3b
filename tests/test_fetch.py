"""The listener's row-to-instance path (``_fetch``) agrees with Django's own loading."""

from __future__ import annotations

import decimal

import pytest
from django.db.models.query_utils import DeferredAttribute

from pgpubsub_simplehistory._rows import fetch_instances
from testproject.shop.factories import OrderFactory
from testproject.shop.models import Order, ReceivedEvent

pytestmark = pytest.mark.django_db


def test_columns_in_any_order_land_on_their_fields_with_converters_applied():
    event = ReceivedEvent.objects.create(
        listener="l", channel="c", history_type="~", history_id="1", object_id="2",
        old={"a": [1, 2]}, new=None, extra={"k": "v"},
    )  # fmt: skip
    table = ReceivedEvent._meta.db_table
    # Reversed and shuffled relative to the model's field order, plus a column it does not know.
    (fetched,) = fetch_instances(
        ReceivedEvent,
        f"SELECT 'ignored' AS unknown_column, extra, received_at, new, old, object_id, "
        f"history_id, history_type, channel, listener, id FROM {table} WHERE id = %s",
        [event.pk],
        "default",
    )
    loaded = ReceivedEvent.objects.get(pk=event.pk)
    for field in ReceivedEvent._meta.concrete_fields:
        assert getattr(fetched, field.attname) == getattr(loaded, field.attname), field.name
    assert fetched.old == {"a": [1, 2]}  # JSONField.from_db_value ran
    assert not fetched._state.adding
    assert fetched._state.db == "default"
    assert not hasattr(fetched, "unknown_column")


def test_fields_missing_from_the_result_are_deferred_and_load_on_access():
    order = OrderFactory(total=decimal.Decimal("12.50"), notes="n")
    (fetched,) = fetch_instances(
        Order, f"SELECT id, status FROM {Order._meta.db_table} WHERE id = %s", [order.pk], "default"
    )
    assert fetched.get_deferred_fields() >= {"total", "notes"}
    assert isinstance(Order.__dict__["total"], DeferredAttribute)
    assert fetched.total == decimal.Decimal("12.50")


def test_no_rows_gives_an_empty_list():
    assert (
        fetch_instances(Order, f"SELECT * FROM {Order._meta.db_table} WHERE false", [], "default")
        == []
    )
