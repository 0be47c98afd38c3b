"""The listener's prepared record query: reused per connection, survives DDL under it."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from pgpubsub_simplehistory import _prepared
from pgpubsub_simplehistory.draining import process_batch
from pgpubsub_simplehistory.models import Notification
from pgpubsub_simplehistory.settlement import Outcome
from testproject.shop.channels import OrderChannel
from testproject.shop.factories import OrderFactory
from testproject.shop.models import Order, ReceivedEvent

pytestmark = pytest.mark.django_db(transaction=True)

HISTORY_TABLE = Order.history.model._meta.db_table


@pytest.fixture(autouse=True)
def fresh_statements():
    _prepared.forget("default")
    yield
    _prepared.forget("default")


def prepares(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith("PREPARE")]


def statuses() -> list[str]:
    return [e.new["status"] for e in ReceivedEvent.objects.filter(listener="on_order_saved")]


def test_prepared_once_per_connection_then_executed():
    order = OrderFactory(status="one")
    with CaptureQueriesContext(connection) as first:
        assert process_batch([OrderChannel]).counts[Outcome.PROCESSED] == 1
    order.status = "two"
    order.save()
    with CaptureQueriesContext(connection) as second:
        assert process_batch([OrderChannel]).counts[Outcome.PROCESSED] == 1
    assert len(prepares(first)) == 1 and prepares(second) == []
    assert any(q["sql"].startswith("EXECUTE psh_") for q in second)
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        assert set(_prepared.prepared_names("default")) <= {r[0] for r in cursor.fetchall()}
    assert statuses() == ["one", "two"]


def test_a_migration_under_a_running_listener_is_absorbed_without_a_failed_attempt(caplog):
    """A column added to the history table changes the prepared query's result type: Postgres
    refuses the old statement; the batch is loaded again unprepared, nothing is counted as a
    failure, and the next batch prepares the statement anew."""
    order = OrderFactory(status="before")
    process_batch([OrderChannel])
    before = _prepared.prepared_names("default")
    assert before
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {HISTORY_TABLE} ADD COLUMN added_by_migration integer")
    try:
        order.status = "after"
        order.save()
        with caplog.at_level(logging.WARNING, logger="pgpubsub_simplehistory"):
            batch = process_batch([OrderChannel])
        assert batch.counts[Outcome.PROCESSED] == 1
        assert "loading each notification's record on its own" in caplog.text
        assert not Notification.objects.exists()  # done, not waiting for a retry
        order.status = "again"
        order.save()
        assert process_batch([OrderChannel]).counts[Outcome.PROCESSED] == 1
        assert _prepared.prepared_names("default") not in ([], before)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {HISTORY_TABLE} DROP COLUMN added_by_migration")
    assert statuses() == ["before", "after", "again"]


def test_a_statement_gone_from_the_session_is_prepared_again():
    """DISCARD ALL in a listener, or a pooler handing over another server connection."""
    order = OrderFactory(status="one")
    process_batch([OrderChannel])
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    order.status = "two"
    order.save()
    assert process_batch([OrderChannel]).counts[Outcome.PROCESSED] == 1
    assert not Notification.objects.exists()
    order.status = "three"
    order.save()
    with CaptureQueriesContext(connection) as queries:
        assert process_batch([OrderChannel]).counts[Outcome.PROCESSED] == 1
    assert len(prepares(queries)) == 1  # prepared anew after the fallback forgot it
    assert statuses() == ["one", "two", "three"]


def test_a_broken_history_table_fails_the_notification_not_the_listener():
    OrderFactory(status="x")
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {HISTORY_TABLE} RENAME TO moved_away_for_a_test")
    try:
        batch = process_batch([OrderChannel])
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE moved_away_for_a_test RENAME TO {HISTORY_TABLE}")
    assert batch.counts[Outcome.RETRY] == 1
    stored = Notification.objects.get()
    assert (stored.state, stored.attempts) == ("pending", 1)
    assert HISTORY_TABLE in stored.last_error


@override_settings(PGPUBSUB_SIMPLEHISTORY_PREPARED_STATEMENTS=False)
def test_prepared_statements_can_be_turned_off():
    OrderFactory(status="plain")
    with CaptureQueriesContext(connection) as queries:
        assert process_batch([OrderChannel]).counts[Outcome.PROCESSED] == 1
    assert prepares(queries) == [] and _prepared.prepared_names("default") == []
    assert statuses() == ["plain"]
