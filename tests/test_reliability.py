"""Retries, parking, per-object order, and the operator commands, in process."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from simple_history.utils import bulk_create_with_history

from pgpubsub_simplehistory.models import Notification
from testproject.shop.channels import OrderChannel
from testproject.shop.factories import CustomerFactory, OrderFactory
from testproject.shop.models import Order, ReceivedEvent

from .conftest import DrainingWorker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(OrderChannel, "max_attempts", 3)
    monkeypatch.setattr(OrderChannel, "retry_base_delay", 0.05)
    monkeypatch.setattr(OrderChannel, "retry_max_delay", 0.1)


@pytest.fixture
def quick_listener(transactional_db, fast_retries):
    lst = DrainingWorker(sweep_interval=0.05)
    lst.start()
    yield lst
    lst.close()


def saved(order) -> list[ReceivedEvent]:
    return list(ReceivedEvent.objects.filter(listener="on_order_saved", object_id=str(order.pk)))


def test_failing_listener_is_retried_with_backoff_then_parked_and_others_flow(quick_listener):
    bad = OrderFactory(status="explode")
    good = OrderFactory(status="fine")
    quick_listener.drain(quiet=0.5)
    stored = Notification.objects.get(object_id=str(bad.pk))
    assert (stored.state, stored.attempts) == ("parked", 3)
    assert "listener refuses order" in stored.last_error
    assert "Traceback" in stored.last_traceback
    assert saved(bad) == []
    assert [e.new["status"] for e in saved(good)] == ["fine"]


def test_retry_delays_grow_exponentially_up_to_the_maximum():
    from pgpubsub_simplehistory import RetryPolicy

    policy = RetryPolicy.of(OrderChannel)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.delay(30) == OrderChannel.retry_max_delay


def test_parked_notification_holds_back_later_changes_of_the_same_object(quick_listener):
    order = OrderFactory(status="start")
    other = OrderFactory(status="other")
    quick_listener.drain()
    order.status = "explode"
    order.save()
    order.status = "after"
    order.save()
    other.status = "other later"
    other.save()
    quick_listener.drain(quiet=0.5)

    assert [e.new["status"] for e in saved(order)] == ["start"]  # "after" waits
    assert [e.new["status"] for e in saved(other)] == ["other", "other later"]
    waiting = Notification.objects.get(object_id=str(order.pk), state="pending")
    assert waiting.attempts == 0

    out = StringIO()
    call_command("parked", "purge", "--model", "shop.Order", "--noinput", stdout=out)
    assert "1 parked notification(s) deleted" in out.getvalue()
    quick_listener.drain()
    assert [e.new["status"] for e in saved(order)] == ["start", "after"]


def test_parked_does_not_block_when_the_channel_says_so(quick_listener, monkeypatch):
    monkeypatch.setattr(OrderChannel, "parked_blocks_object", False)
    order = OrderFactory(status="explode")
    order.status = "after"
    order.save()
    quick_listener.drain(quiet=0.5)
    assert [e.new["status"] for e in saved(order)] == ["after"]
    assert Notification.objects.get().state == "parked"


def test_per_object_order_holds_while_an_earlier_change_waits_for_retry(transactional_db):
    """A later change of X is not claimed while an earlier one waits for its retry."""
    from django.db import transaction

    from pgpubsub_simplehistory import queue

    order = OrderFactory(status="explode")
    order.status = "after"
    order.save()
    other = OrderFactory()
    first = Notification.objects.filter(object_id=str(order.pk)).order_by("pk").first()
    Notification.objects.filter(pk=first.pk).update(
        attempts=1, available_at=first.available_at.replace(year=2999)
    )
    with transaction.atomic():
        name = OrderChannel.listen_safe_name()
        [claimed], _ = queue.claim(
            [name], [name], 1, worker="test", lease_seconds=10, using="default"
        )
    assert claimed.object_id == str(other.pk)


def test_one_drain_delivers_an_objects_changes_in_order_one_batch_each(transactional_db):
    """Three changes of one object: a claim takes at most one notification per object, so each
    batch takes the next; one drain() call delivers all three, in order."""
    from pgpubsub_simplehistory.draining import drain, process_batch
    from pgpubsub_simplehistory.settlement import Outcome

    order = OrderFactory(status="one")
    for status in ("two", "three"):
        order.status = status
        order.save()
    first = process_batch([OrderChannel], limit=10)
    assert (first.counts[Outcome.PROCESSED], first.exhausted) == (1, False)
    drained = drain([OrderChannel])
    assert (drained.counts[Outcome.PROCESSED], drained.exhausted) == (2, True)
    assert [e.new["status"] for e in saved(order)] == ["one", "two", "three"]
    assert not Notification.objects.exists()


def test_a_notification_taken_over_by_another_worker_is_skipped_not_run(transactional_db):
    """Its lease ran out while it waited in this worker's batch and another worker claimed it:
    this worker's transaction finds it is no longer the holder and runs nothing."""
    from pgpubsub_simplehistory import queue
    from pgpubsub_simplehistory.draining import _run
    from pgpubsub_simplehistory.leases import Running

    order = OrderFactory(status="fine")
    name = OrderChannel.listen_safe_name()
    [row], _ = queue.claim([name], [name], 1, worker="me", lease_seconds=10, using="default")
    Notification.objects.filter(pk=row.pk).update(leased_by="someone-else")
    assert _run(OrderChannel, row, "me", "default", None, Running([], "me", "default")) is None
    assert saved(order) == []
    assert Notification.objects.get().leased_by == "someone-else"


@pytest.fixture
def swallowing_listener():
    """An extra OrderChannel listener that writes, then swallows a database error for orders
    with status 'swallow', leaving the transaction aborted while returning normally."""
    from django.db import DatabaseError, connection

    from pgpubsub_simplehistory import post_save_listener
    from pgpubsub_simplehistory.listeners import unsubscribe

    def swallow(new):
        if new is not None and new.status == "swallow":
            ReceivedEvent.objects.create(
                listener="swallow", channel="-", history_type="~", history_id="-",
                object_id=str(new.pk), old=None, new=None,
            )  # fmt: skip
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT * FROM no_such_table_here")
            except DatabaseError:
                pass

    post_save_listener(OrderChannel)(swallow)
    yield
    unsubscribe(OrderChannel, swallow)


@pytest.mark.parametrize("position", ["first", "later"])
def test_a_listener_that_swallows_a_database_error_is_a_failure_not_a_success(
    transactional_db, swallowing_listener, position
):
    """First in its transaction (no savepoint) or later (in a savepoint): the aborted
    transaction is noticed, the listener's writes are rolled back and the row waits for a retry;
    the other notification of the batch is processed."""
    from pgpubsub_simplehistory.draining import process_batch
    from pgpubsub_simplehistory.settlement import Outcome

    if position == "later":
        fine = OrderFactory(status="fine")
    bad = OrderFactory(status="swallow")
    if position == "first":
        fine = OrderFactory(status="fine")
    outcomes: dict[Outcome, int] = {}
    while (batch := process_batch([OrderChannel], limit=10)).handled:
        for outcome, n in batch.counts.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
    assert (outcomes[Outcome.PROCESSED], outcomes[Outcome.RETRY]) == (1, 1)
    stored = Notification.objects.get()
    assert (stored.object_id, stored.state, stored.attempts) == (str(bad.pk), "pending", 1)
    assert stored.last_error
    assert not ReceivedEvent.objects.filter(listener="swallow").exists()  # rolled back
    assert [e.new["status"] for e in saved(fine)] == ["fine"]
    assert saved(bad) == []


def test_first_row_failure_is_settled_in_a_new_transaction_with_its_attempt(transactional_db):
    from pgpubsub_simplehistory.draining import process_batch
    from pgpubsub_simplehistory.settlement import Outcome

    bad = OrderFactory(status="explode")
    batch = process_batch([OrderChannel], limit=10)
    assert batch.counts[Outcome.RETRY] == 1 and not batch.exhausted
    stored = Notification.objects.get(object_id=str(bad.pk))
    assert (stored.state, stored.attempts) == ("pending", 1)
    assert "listener refuses order" in stored.last_error and "Traceback" in stored.last_traceback
    assert stored.available_at > stored.created_at  # pushed back: not claimable right away
    assert process_batch([OrderChannel], limit=10).handled == 0


@pytest.mark.parametrize("factory", ["order", "shipment"])  # integer and UUID history ids
def test_a_batch_of_updates_loads_records_and_previous_records_in_one_query(
    transactional_db, factory
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from pgpubsub_simplehistory.draining import process_batch
    from pgpubsub_simplehistory.settlement import Outcome
    from testproject.shop.channels import ShipmentChannel
    from testproject.shop.factories import ShipmentFactory

    if factory == "order":
        channel, field, listener = OrderChannel, "status", "on_order_saved"
        objects = [OrderFactory(status=f"first {i}") for i in range(3)]
    else:
        channel, field, listener = ShipmentChannel, "carrier", "on_shipment_saved"
        objects = [ShipmentFactory(carrier=f"first {i}") for i in range(3)]
    assert process_batch([channel], limit=10).counts[Outcome.PROCESSED] == 3  # the inserts
    ReceivedEvent.objects.all().delete()
    for i, obj in enumerate(objects):
        setattr(obj, field, f"second {i}")
        obj.save()
    history_table = type(objects[0]).history.model._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        batch = process_batch([channel], limit=10)
    assert batch.counts[Outcome.PROCESSED] == 3
    with connection.cursor() as cursor:  # the connection's prepared statements, by name
        cursor.execute("SELECT name, statement FROM pg_prepared_statements")
        prepared = dict(cursor.fetchall())
    loads = [
        q["sql"]
        for q in queries
        if (
            q["sql"].startswith("EXECUTE psh_")  # the record query, not the claim
            and history_table in prepared[q["sql"].split()[1]]
        )
        or (history_table in q["sql"] and not q["sql"].startswith("PREPARE"))
    ]
    assert len(loads) == 1, loads
    received = {
        e.object_id: (e.old[field], e.new[field])
        for e in ReceivedEvent.objects.filter(listener=listener)
    }
    assert received == {str(o.pk): (f"first {i}", f"second {i}") for i, o in enumerate(objects)}


def test_parked_list_retry_purge_commands(quick_listener):
    bad = OrderFactory(status="explode")
    quick_listener.drain(quiet=0.5)
    parked = Notification.objects.get(state="parked")

    out = StringIO()
    call_command(
        "parked", "list", "--channel", "testproject.shop.channels.OrderChannel", stdout=out
    )
    assert str(parked.pk) in out.getvalue() and "listener refuses order" in out.getvalue()

    out = StringIO()
    call_command("parked", "retry", "--id", str(parked.pk), stdout=out)
    assert "1 parked notification(s) made pending" in out.getvalue()
    again = Notification.objects.get(pk=parked.pk)
    assert (again.state, again.attempts) == ("pending", 0)

    quick_listener.drain(quiet=0.5)  # still failing: parked again after 3 attempts
    assert Notification.objects.get(pk=parked.pk).state == "parked"

    with pytest.raises(CommandError, match="--channel, --model, --id or --all") as exc:
        call_command("parked", "purge", "--noinput")
    assert exc.value.returncode == 2
    with pytest.raises(CommandError, match=r"channel 'nowhere\.X' not found"):
        call_command("parked", "list", "--channel", "nowhere.X")

    out = StringIO()
    call_command("parked", "purge", "--all", "--noinput", stdout=out)
    assert "1 parked notification(s) deleted" in out.getvalue()
    assert not Notification.objects.exists()
    assert bad.history.count() == 1  # history stays: replay_history can re-run it


def test_health_command_thresholds():
    OrderFactory()
    OrderFactory()
    out = StringIO()
    call_command("listener_health", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["ok"] is True
    (channel,) = report["channels"]
    assert (channel["channel"], channel["pending"], channel["parked"]) == (
        OrderChannel.name(),
        2,
        0,
    )
    assert 0 <= report["notify_queue_usage"] < 1
    with pytest.raises(CommandError, match="2 pending > 1") as exc:
        call_command("listener_health", "--max-pending", "1", stdout=StringIO())
    assert exc.value.returncode == 1
    with pytest.raises(CommandError, match="oldest pending is"):
        call_command("listener_health", "--max-age", "0", stdout=StringIO())
    call_command("listener_health", "--max-pending", "2", "--max-queue-usage", "0.5", stdout=out)


def _claim_plan(cursor, listen_name: str) -> str:
    """The plan the claim function runs its query with: its settings applied, the query
    prepared with parameters for its variables, the plan a session caches (generic)."""
    from django.db import transaction

    cursor.execute("SELECT proconfig, prosrc FROM pg_proc WHERE proname = %s", [CLAIM])
    config, body = cursor.fetchone()
    query = body.split("RETURN QUERY", 1)[1].split(";", 1)[0]
    for variable, parameter in (
        ("v_name = ANY(p_blocking)", "$1 = ANY($2)"),
        ("v_name", "$1"),
        ("v_left", "$3"),
        ("p_worker", "$4"),
        ("p_lease_seconds", "$5"),
    ):
        query = query.replace(variable, parameter)
    with transaction.atomic():
        for setting in config:
            name, value = setting.split("=")
            cursor.execute(f"SET LOCAL {name} = {value}")
        cursor.execute(f"PREPARE psh_claim (text, text[], integer, text, float8) AS {query}")
        try:
            cursor.execute("EXPLAIN EXECUTE psh_claim(%s, '{}', 100, 'test', 10)", [listen_name])
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE psh_claim")


CLAIM = "pgpubsub_simplehistory_claim_v1"


def test_the_claim_has_one_plan_an_ordered_index_walk_with_or_without_statistics():
    """The claim function's settings leave the planner one shape, an ordered walk of the claim
    index probing the per-object index per candidate, then the claimed rows updated by their
    address (no Sort, no hash, no join, no sequential scan, no index walked whole), whatever the
    statistics: of a queue analyzed while empty (as autovacuum leaves a drained one; a session
    cached a plan that walked the whole queue for each claimed row, a join filter, and every
    earlier id for each candidate, the primary key, until the next ANALYZE), with a backlog
    since, of one emptied since (TRUNCATE: no row count), and once another channel's backlog has
    skewed them. So one generic plan per session
    serves every claim (planning it again per call was a third of a claim's time beside a
    skewed backlog)."""
    from django.db import connection

    customer = CustomerFactory()
    name = OrderChannel.listen_safe_name()
    plans = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT proconfig FROM pg_proc WHERE proname = %s", [CLAIM])
        # one generic plan; and no JIT: a generic plan's cost assumes a tenth of the backlog
        assert {"plan_cache_mode=force_generic_plan", "jit=off"} <= set(cursor.fetchone()[0])
        cursor.execute("TRUNCATE pgpubsub_simplehistory_notification")
        cursor.execute("ANALYZE pgpubsub_simplehistory_notification")
        plans["analyzed while empty"] = _claim_plan(cursor, name)  # a worker's first claim
        bulk_create_with_history([Order(customer=customer) for _ in range(1500)], Order)
        plans["analyzed while empty, a backlog since"] = _claim_plan(cursor, name)
        cursor.execute("TRUNCATE pgpubsub_simplehistory_notification")
        bulk_create_with_history([Order(customer=customer) for _ in range(1500)], Order)
        plans["emptied since"] = _claim_plan(cursor, name)
        cursor.execute(
            "INSERT INTO pgpubsub_simplehistory_notification (listen_name, model, history_model,"
            " history_id, history_type, object_id, context, created_at, state, attempts,"
            " available_at, last_error, last_traceback, leased_by) SELECT 'psh_other', 'a.B',"
            " 'a.HistoricalB', g::text, '~', g::text, '{}', now(), 'pending', 0, now(), '', '',"
            " '' FROM generate_series(1, 20000) g"
        )
        cursor.execute("ANALYZE pgpubsub_simplehistory_notification")
        plans["skewed"] = _claim_plan(cursor, name)
    for state, plan in plans.items():
        assert "$1" in plan, (state, plan)  # generic: the listen name is a parameter
        assert "Index Scan using psh_notification_claim" in plan, (state, plan)
        assert "Index Scan using psh_notification_object" in plan, (state, plan)
        # each candidate probes its object's earlier rows: object and id in the index condition
        # (the primary key, walking every earlier id, was the plan on a queue analyzed empty)
        assert "(ROW((object_id)::text, id) < ROW((n.object_id)::text, n.id))" in plan, (
            state,
            plan,
        )
        assert "((object_id)::text = (n.object_id)::text)" in plan, (state, plan)
        assert "pgpubsub_simplehistory_notification_pkey" not in plan, (state, plan)
        # the claimed rows, updated by their address
        assert "Tid Scan on pgpubsub_simplehistory_notification q" in plan, (state, plan)
        assert "TID Cond: (ctid = ANY (" in plan, (state, plan)
        for avoided in ("Sort", "Hash", "Seq Scan", "Merge", "Bitmap", "Join", "Nested Loop"):
            assert avoided not in plan, (state, avoided, plan)


class _Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_retry_and_purge_of_many_parked_show_progress_on_a_terminal_only(transactional_db):
    customer = CustomerFactory()
    bulk_create_with_history([Order(customer=customer, status=f"s{i}") for i in range(2500)], Order)
    Notification.objects.update(state="parked", attempts=5)
    total = Notification.objects.count()
    assert total == 2500

    err = _Terminal()
    out = StringIO()
    call_command("parked", "retry", "--all", stdout=out, stderr=err)
    assert f"{total}/{total}" in err.getvalue() and "[####" in err.getvalue()
    assert f"{total} parked notification(s) made pending" in out.getvalue()
    assert not Notification.objects.filter(state="parked").exists()

    Notification.objects.update(state="parked")
    err = StringIO()  # not a terminal: no bar unless asked for
    call_command("parked", "retry", "--model", "shop.Order", stdout=StringIO(), stderr=err)
    assert err.getvalue() == ""

    Notification.objects.update(state="parked")
    err, out = _Terminal(), StringIO()
    call_command("parked", "purge", "--all", "--noinput", "-v", "0", stdout=out, stderr=err)
    assert out.getvalue() == "" and err.getvalue() == ""
    assert not Notification.objects.exists()
