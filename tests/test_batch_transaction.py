"""A batch runs in one transaction while all goes well (draining._run_together): its statements do
not grow with the number of notifications, a failing listener is settled once for its attempt
and the others commit without it, and a failure that cannot be pinned on one notification runs
them one transaction each."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pgpubsub_simplehistory.draining import process_batch
from pgpubsub_simplehistory.models import Notification
from pgpubsub_simplehistory.settlement import Outcome
from testproject.shop.channels import OrderChannel
from testproject.shop.factories import CustomerFactory
from testproject.shop.models import Order, ReceivedEvent

pytestmark = pytest.mark.django_db(transaction=True)


def _orders(statuses: list[str]) -> list[Order]:
    customer = CustomerFactory(name="batch")
    return [Order.objects.create(customer=customer, status=s) for s in statuses]


def _statements(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries]


def _ours(queries: CaptureQueriesContext) -> list[str]:
    """The worker's statements (not the test listener's INSERT and its django_migrations read)."""
    return [
        q
        for q in _statements(queries)
        if "pgpubsub_simplehistory" in q
        or "historicalorder" in q
        or q in ("BEGIN", "COMMIT")
        or q.startswith(("EXECUTE psh_", "PREPARE psh_", "SELECT pg_current_xact_id"))
    ]


def test_a_batch_costs_the_same_statements_for_5_or_40_notifications():
    counts = {}
    for n in (5, 40):
        _orders([f"fine {i}" for i in range(n)])
        with CaptureQueriesContext(connection) as queries:
            batch = process_batch([OrderChannel], limit=100)
        assert batch.counts[Outcome.PROCESSED] == n
        counts[n] = len(_ours(queries))
        # one statement deletes the batch's notifications, none deletes them one by one
        deletes = [q for q in _statements(queries) if q.startswith("DELETE")]
        assert len(deletes) == 1 and "= ANY(" in deletes[0], deletes
        # each listener wrote its row: the only statements that grow with n
        assert ReceivedEvent.objects.filter(listener="on_order_saved").count() == n
        ReceivedEvent.objects.all().delete()
    # claim, records (each PREPAREd the first time), BEGIN, delete, COMMIT, flush: whatever the
    # size
    assert counts[40] <= counts[5] <= 8, counts
    assert not Notification.objects.exists()


def test_a_failing_listener_is_settled_once_and_the_others_commit_together():
    orders = _orders(["a", "b", "explode", "c", "d"])
    with CaptureQueriesContext(connection) as queries:
        batch = process_batch([OrderChannel], limit=100)
    assert batch.counts[Outcome.PROCESSED] == 4 and batch.counts[Outcome.RETRY] == 1
    failed = Notification.objects.get()
    assert failed.object_id == str(orders[2].pk) and failed.attempts == 1
    assert failed.last_error.startswith("RuntimeError: listener refuses order")
    received = ReceivedEvent.objects.filter(listener="on_order_saved")
    assert sorted(int(e.object_id) for e in received) == sorted(
        o.pk for o in orders if o.status != "explode"
    )
    # the first transaction rolled back at the failure, before its delete; the failed one was
    # settled; the second transaction ran the four others and deleted them in one statement
    deletes = [q for q in _statements(queries) if q.startswith("DELETE")]
    assert len(deletes) == 1 and "= ANY(" in deletes[0], deletes


def test_a_commit_failure_runs_them_one_by_one_and_only_the_culprit_fails(tmp_path, monkeypatch):
    marker = tmp_path / "dangling-runs"
    monkeypatch.setenv("SHOP_DANGLING_MARKER", str(marker))
    orders = _orders(["a", "dangling", "b", "c"])
    with CaptureQueriesContext(connection) as queries:
        batch = process_batch([OrderChannel], limit=100)
    assert batch.counts[Outcome.PROCESSED] == 3 and batch.counts[Outcome.RETRY] == 1
    failed = Notification.objects.get()
    assert failed.object_id == str(orders[1].pk)
    assert failed.last_error.startswith("commit failed: IntegrityError"), failed.last_error
    # together (the COMMIT fails: no culprit), then one transaction each: the culprit ran twice
    assert len(marker.read_text().splitlines()) == 2
    one_by_one = [q for q in _statements(queries) if q.startswith("DELETE") and "ANY(" not in q]
    assert len(one_by_one) == 4, one_by_one
    assert ReceivedEvent.objects.filter(listener="on_order_saved").count() == 3


def test_after_a_failure_no_one_is_blamed_for_those_it_ran_run_alone_whatever_the_deadline(
    tmp_path, monkeypatch
):
    """The batch stops starting notifications (here: should_stop, as at the deadline) and then
    its COMMIT fails: the ones it ran must each run alone now, so that the culprit's attempt is
    settled; only those it never started go back to the queue."""
    monkeypatch.setenv("SHOP_DANGLING_MARKER", str(tmp_path / "dangling-runs"))
    orders = _orders(["a", "dangling", "b", "not started"])
    checks = []

    def should_stop() -> bool:  # asked before each notification after the first
        checks.append(1)
        return len(checks) >= 3

    batch = process_batch([OrderChannel], limit=100, should_stop=should_stop)
    assert batch.counts[Outcome.PROCESSED] == 2 and batch.counts[Outcome.RETRY] == 1
    dangling, released = (
        Notification.objects.get(object_id=str(orders[1].pk)),
        Notification.objects.get(object_id=str(orders[3].pk)),
    )
    assert dangling.attempts == 1 and dangling.last_error.startswith("commit failed:")
    assert released.attempts == 0 and not released.leased_by  # never started: given back
    assert ReceivedEvent.objects.filter(listener="on_order_saved").count() == 2


def test_a_batch_of_one_starts_its_listener_after_the_claim_and_the_load_alone():
    """Commit to callback: the claim (which also takes the awake keys it is given) and the
    records, then the listener; the transaction's delete comes after it. Two statements, both
    prepared on the connection by the batch before."""
    _orders(["before"])
    process_batch([OrderChannel], limit=100)
    ReceivedEvent.objects.all().delete()
    [order] = _orders(["alone"])
    with CaptureQueriesContext(connection) as queries:
        batch = process_batch([OrderChannel], limit=100)
    assert batch.counts[Outcome.PROCESSED] == 1
    statements = _statements(queries)
    # the listener's first statement (BEGIN is sent with it): before it, the claim and the records
    ours = _ours(queries)
    listener = next(i for i, q in enumerate(statements) if q not in ours)
    before = [q for q in statements[:listener] if q != "BEGIN"]
    assert [q.split()[0] for q in before] == ["EXECUTE", "EXECUTE"], before
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, statement FROM pg_prepared_statements")
        prepared = dict(cursor.fetchall())
    claim, records = (prepared[q.split()[1]] for q in before)
    assert "claim_v1" in claim and "pg_try_advisory_lock_shared" in claim, claim
    assert "historicalorder" in records, records
    assert ReceivedEvent.objects.get(listener="on_order_saved").object_id == str(order.pk)


def test_a_batch_of_one_whose_commit_fails_is_settled_after_one_run(tmp_path, monkeypatch):
    """Alone in its transaction, a failure at COMMIT is that notification's: settled at once
    for this attempt, its listener not run a second time."""
    marker = tmp_path / "dangling-runs"
    monkeypatch.setenv("SHOP_DANGLING_MARKER", str(marker))
    [order] = _orders(["dangling"])
    batch = process_batch([OrderChannel], limit=100)
    assert batch.counts[Outcome.RETRY] == 1 and batch.handled == 1
    failed = Notification.objects.get()
    assert failed.object_id == str(order.pk) and failed.attempts == 1
    assert failed.last_error.startswith("commit failed: IntegrityError"), failed.last_error
    assert len(marker.read_text().splitlines()) == 1
    assert not ReceivedEvent.objects.filter(listener="on_order_saved").exists()
