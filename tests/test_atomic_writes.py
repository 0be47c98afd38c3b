"""A change, its history row and its notification commit together or not at all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError

from pgpubsub_simplehistory.models import Notification
from testproject.shop.factories import CustomerFactory, OrderFactory
from testproject.shop.models import AuditNote, Order

pytestmark = pytest.mark.django_db(transaction=True)


def _break_history_inserts(table: str) -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION test_refuse_history() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'history insert refused by test'; END $$ LANGUAGE plpgsql;
            """
        )
        cursor.execute(
            f"CREATE TRIGGER test_refuse BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_history()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER test_refuse ON {table}")
            cursor.execute("DROP FUNCTION test_refuse_history()")


@pytest.fixture
def failing_order_history() -> Iterator[None]:
    yield from _break_history_inserts("shop_historicalorder")


@pytest.fixture
def failing_auditnote_history() -> Iterator[None]:
    yield from _break_history_inserts("shop_historicalauditnote")


def test_insert_rolls_back_when_history_insert_fails_in_autocommit(failing_order_history):
    customer = CustomerFactory()
    with pytest.raises(DatabaseError, match="history insert refused"):
        Order.objects.create(customer=customer, status="lost")
    assert not Order.objects.filter(status="lost").exists()
    assert Notification.objects.count() == 0


def test_update_rolls_back_when_history_insert_fails_in_autocommit(request):
    order = OrderFactory(status="before")
    Notification.objects.all().delete()
    gen = _break_history_inserts("shop_historicalorder")
    next(gen)
    request.addfinalizer(lambda: next(gen, None))
    order.status = "after"
    with pytest.raises(DatabaseError, match="history insert refused"):
        order.save()
    assert Order.objects.get(pk=order.pk).status == "before"
    assert Notification.objects.count() == 0


def test_save_inside_atomic_rolls_back_the_whole_transaction(failing_order_history):
    customer = CustomerFactory()
    with pytest.raises(DatabaseError, match="history insert refused"), transaction.atomic():
        Order.objects.create(customer=customer, status="lost")
    assert not Order.objects.exists()


def test_delete_rolls_back_when_history_insert_fails(request):
    order = OrderFactory()
    gen = _break_history_inserts("shop_historicalorder")
    next(gen)
    request.addfinalizer(lambda: next(gen, None))
    with pytest.raises(DatabaseError, match="history insert refused"):
        order.delete()
    assert Order.objects.filter(pk=order.pk).exists()
    with pytest.raises(DatabaseError, match="history insert refused"), transaction.atomic():
        Order.objects.get(pk=order.pk).delete()
    assert Order.objects.filter(pk=order.pk).exists()


def test_plain_simple_history_commits_the_change_without_history(failing_auditnote_history):
    """Upstream contract: Django sends post_save after the save's transaction has committed.

    If this starts failing, Django or django-simple-history made plain saves atomic and
    ``pgpubsub_simplehistory.HistoricalRecords`` may no longer be needed.
    """
    with pytest.raises(DatabaseError, match="history insert refused"):
        AuditNote.objects.create(text="committed anyway")
    assert AuditNote.objects.filter(text="committed anyway").exists()
    assert not AuditNote.history.exists()


def test_successful_save_commits_model_history_and_notification_once():
    order = OrderFactory()
    assert order.history.count() == 1
    assert Notification.objects.filter(object_id=str(order.pk)).count() == 1
