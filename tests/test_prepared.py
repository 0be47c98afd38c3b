"""The worker's prepared statements (the claim, the record query): reused per connection,
survive DDL under them."""

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
QUEUE_TABLE = Notification._meta.db_table


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
    assert len(prepares(first)) == 2 and prepares(second) == []  # the claim, the records
    assert any("pgpubsub_simplehistory_claim_v1" in sql for sql in prepares(first))
    assert sum(q["sql"].startswith("EXECUTE psh_") for q in second) == 2
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


def test_a_queue_column_changing_type_under_a_running_worker_keeps_the_prepared_claim(caplog):
    """A later version's migration changing a queue column's type while the worker of the
    version before runs: Postgres plans the prepared claim again by itself (the claim
    function's result follows the table), nothing fails and nothing is prepared again."""
    order = OrderFactory(status="before")
    process_batch([OrderChannel])
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {QUEUE_TABLE} ALTER COLUMN migration_id_at_change TYPE bigint")
    try:
        order.status = "after"
        order.save()
        warnings = caplog.at_level(logging.WARNING, logger="pgpubsub_simplehistory")
        with warnings, CaptureQueriesContext(connection) as queries:
            assert process_batch([OrderChannel]).counts[Outcome.PROCESSED] == 1
        assert caplog.text == ""
        assert prepares(queries) == []
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER TABLE {QUEUE_TABLE} ALTER COLUMN migration_id_at_change TYPE integer"
            )
    assert not Notification.objects.exists()
    assert statuses() == ["before", "after"]


def test_a_statement_gone_from_the_session_is_prepared_again(caplog):
    """DISCARD ALL in a listener, or a pooler handing over another server connection: the claim
    and the record query run unprepared once, then are prepared anew."""
    order = OrderFactory(status="one")
    process_batch([OrderChannel])
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    order.status = "two"
    order.save()
    with caplog.at_level(logging.WARNING, logger="pgpubsub_simplehistory"):
        assert process_batch([OrderChannel]).counts[Outcome.PROCESSED] == 1
    assert "the prepared claim failed" in caplog.text and "does not exist" in caplog.text
    assert not Notification.objects.exists()
    order.status = "three"
    order.save()
    with CaptureQueriesContext(connection) as queries:
        assert process_batch([OrderChannel]).counts[Outcome.PROCESSED] == 1
    # prepared anew after the fallbacks forgot them: the claim (the records were, in the last)
    assert len(prepares(queries)) == 1
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
