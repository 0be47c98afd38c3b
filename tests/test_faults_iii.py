"""Fault tests III (issue 14, gaps an audit found): a listener statement cancelled by the
server's ``statement_timeout``; per-object order under concurrent bulk writers.

Real Postgres throughout: the statement timeout is set for the worker subprocess's sessions only
(``PGOPTIONS``), and the slow statement is a real one, a trigger on the listeners' own table
that sleeps on the server; the bulk writers are threads with connections of their own beside a
real in-process worker.
"""

from __future__ import annotations

import datetime
import itertools
import random
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from pgpubsub_simplehistory.failures import sqlstate
from pgpubsub_simplehistory.models import Notification
from testproject.shop.models import Customer, Order, ReceivedEvent

from .conftest import DrainingWorker, Proc
from .test_faults import stop
from .test_faults_ii import (
    FAST_RETRIES,
    Writer,
    all_once,
    deliveries,
    expect,
    history_id,
    log_records,
    marker_runs,
    processed_lines,
    queue_state,
    tail,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]


# -- statement_timeout during a callback ----------------------------------------------------------

#: A listener's INSERT of a ReceivedEvent for an order whose status is "sleepy" sleeps this long
#: on the server (in a trigger): far longer than the worker's statement_timeout.
SLEEP_SECONDS = 20
STATEMENT_TIMEOUT_MS = 1000


@pytest.fixture
def sleepy_statement(transactional_db: None) -> Iterator[Callable[[], int]]:
    """A BEFORE INSERT trigger on shop_receivedevent that sleeps ``SLEEP_SECONDS`` in the
    statement of ``on_order_saved`` recording an order whose status is "sleepy", after counting
    the run in a sequence (not transactional: a cancelled run counts). Yields a function that
    returns the runs so far. Request it before ``manage``: the workers are killed first."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE SEQUENCE psh_test_sleepy_runs")
        cursor.execute(
            f"""
            CREATE FUNCTION psh_test_sleepy() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.listener = 'on_order_saved' AND NEW.new ->> 'status' = 'sleepy' THEN
                    PERFORM nextval('psh_test_sleepy_runs');
                    PERFORM pg_sleep({SLEEP_SECONDS});
                END IF;
                RETURN NEW;
            END $$
            """
        )
        cursor.execute(
            "CREATE TRIGGER psh_test_sleepy BEFORE INSERT ON shop_receivedevent "
            "FOR EACH ROW EXECUTE FUNCTION psh_test_sleepy()"
        )

    def runs() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM psh_test_sleepy_runs"
            )
            return int(cursor.fetchone()[0])

    yield runs
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS psh_test_sleepy ON shop_receivedevent")
        cursor.execute("DROP FUNCTION IF EXISTS psh_test_sleepy()")
        cursor.execute("DROP SEQUENCE IF EXISTS psh_test_sleepy_runs")


def test_a_listener_statement_cancelled_by_statement_timeout_is_retried_then_parked(
    sleepy_statement: Callable[[], int], manage: Callable[..., Proc]
) -> None:
    customer = Customer.objects.create(name="statement-timeout")
    with transaction.atomic():  # one batch: the sleepy order between innocent ones
        innocent = [Order.objects.create(customer=customer, status=f"fine{i}") for i in range(4)]
        sleepy = Order.objects.create(customer=customer, status="sleepy")
        innocent += [Order.objects.create(customer=customer, status=f"fine{i}") for i in (4, 5, 6)]
    # Only the worker's sessions get the setting (libpq reads PGOPTIONS).
    env = {**FAST_RETRIES, "PGOPTIONS": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"}
    started = time.monotonic()
    proc = manage("listen", "--sweep-interval", "0.2", "--loglevel", "debug", env=env)

    def explain() -> str:
        return (
            f"{queue_state()}; innocent deliveries {deliveries(innocent)}; sleepy runs "
            f"{sleepy_statement()}; {tail(proc)}"
        )

    expect(
        lambda: (
            Notification.objects.filter(object_id=str(sleepy.pk), state="parked").exists()
            and all_once(innocent)
        ),
        timeout=60,
        what="the sleepy order parked and the 7 innocent ones processed",
        explain=explain,
    )
    parked_after = time.monotonic() - started
    time.sleep(1.0)  # a worker that went on trying would try again within this second
    assert proc.poll() is None, tail(proc)
    stderr = proc.stderr_text()
    assert stop(proc) == 0, tail(proc)

    parked = Notification.objects.get()
    assert (parked.object_id, parked.state, parked.attempts) == (str(sleepy.pk), "parked", 3)
    # The error names what happened: the server cancelled the listener's statement because of
    # statement_timeout (not a lost session, not a failed commit).
    assert parked.last_error.startswith("statement cancelled by the server:"), parked.last_error
    assert "(statement_timeout = 1s on the worker's sessions)" in parked.last_error
    assert "session terminated" not in parked.last_error, parked.last_error
    assert not parked.last_error.startswith("commit failed"), parked.last_error
    # One run per attempt, each cut short by the timeout (3 runs of SLEEP_SECONDS would take
    # a minute).
    assert sleepy_statement() == 3
    assert parked_after < SLEEP_SECONDS, parked_after
    assert deliveries([sleepy]) == {sleepy.pk: 0}
    assert deliveries(innocent) == {o.pk: 1 for o in innocent}
    hid = history_id(sleepy)
    failures = [r for r in log_records(stderr) if f"history_id={hid} " in r.splitlines()[0]]
    assert len(failures) == 3, "\n".join(failures) or stderr[-3000:]
    assert all(re.search(r"statement[ _]timeout", f) for f in failures), failures
    assert "retry in" in failures[0] and "parked after 3 attempts" in failures[-1], failures
    assert processed_lines(stderr, hid) == []
    assert all(len(processed_lines(stderr, history_id(o))) == 1 for o in innocent)
    print(f"parked after 3 statement timeouts in {parked_after:.1f} s: {parked.last_error!r}")


# -- per-object order under concurrent bulk writers -----------------------------------------------


def order_deliveries(pks: list[int]) -> dict[int, list[ReceivedEvent]]:
    """The committed deliveries to on_order_saved per order, in delivery (commit) order."""
    found: dict[int, list[ReceivedEvent]] = {pk: [] for pk in pks}
    for event in ReceivedEvent.objects.filter(listener="on_order_saved").order_by("id"):
        found.setdefault(int(event.object_id), []).append(event)
    return found


def order_history_ids(pks: list[int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {pk: [] for pk in pks}
    rows = Order.history.filter(id__in=pks).values_list("id", "history_id").order_by("history_id")
    for pk, hid in rows:
        found[pk].append(hid)
    return found


def is_deadlock(exc: BaseException) -> bool:
    return sqlstate(exc) == "40P01"  # psycopg2's pgcode or psycopg 3's sqlstate


def test_concurrent_bulk_writers_of_overlapping_objects_are_delivered_once_in_order(
    transactional_db: None,
) -> None:
    customer = Customer.objects.create(name="bulk")
    shared = bulk_create_with_history(
        [Order(customer=customer, status="start") for _ in range(12)], Order
    )
    shared_pks = [o.pk for o in shared]
    worker = DrainingWorker(sweep_interval=3600)
    worker.start()
    try:
        worker.drain()
        writers, rounds = 4, 12
        created: list[list[int]] = [[] for _ in range(writers)]
        deadlocks: list[int] = [0] * writers

        def write(w: int) -> Callable[[], None]:
            rng = random.Random(w)
            # One writer's clock is an hour behind (bulk_history_create takes default_date):
            # history_date then disagrees with the order in which the changes committed.
            skew = datetime.timedelta(hours=-1) if w == 0 else datetime.timedelta(0)

            def one_round(i: int) -> None:
                mine = Customer.objects.get(pk=customer.pk)
                picked = Order.objects.filter(pk__in=rng.sample(shared_pks, rng.randint(3, 8)))
                objs = list(picked)
                rng.shuffle(objs)
                for n, obj in enumerate(objs):
                    obj.status = f"w{w}r{i}n{n}"
                    obj.total = Decimal(f"{w}{i}.{n:02d}")
                date = timezone.now() + skew
                if i % 3 == 2:  # a round that also creates orders and updates them at once
                    with transaction.atomic():
                        new = bulk_create_with_history(
                            [Order(customer=mine, status=f"new w{w}r{i}") for _ in range(2)],
                            Order,
                            default_date=date,
                        )
                        for obj in new:
                            obj.status = f"renamed w{w}r{i}"
                        bulk_update_with_history(
                            [*objs, *new], Order, ["status", "total"], default_date=date
                        )
                        time.sleep(rng.uniform(0, 0.05))  # commit after others took ids
                    created[w].extend(o.pk for o in new)
                else:
                    bulk_update_with_history(objs, Order, ["status", "total"], default_date=date)

            def work() -> None:
                for i in range(rounds):
                    for _ in range(5):  # an application retries a deadlocked transaction
                        try:
                            one_round(i)
                            break
                        except OperationalError as exc:
                            if not is_deadlock(exc):
                                raise
                            deadlocks[w] += 1
                    else:
                        raise AssertionError(f"writer {w} round {i} deadlocked 5 times")

            return work

        threads = [Writer(write(w)) for w in range(writers)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 90
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            worker.process_available(timeout=0.01)  # claim while the writers commit
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
        assert not any(t.is_alive() for t in threads), "a writer is still running after 90 s"
        assert [t.error for t in threads] == [None] * writers
        worker.drain()
    finally:
        worker.close()

    pks = shared_pks + [pk for mine in created for pk in mine]
    assert len(pks) == 12 + writers * (rounds // 3) * 2
    delivered = order_deliveries(pks)
    expected = order_history_ids(pks)
    assert set(delivered) == set(pks), "deliveries of orders nobody wrote"
    changes = 0
    for pk in pks:
        events = delivered[pk]
        ids = [int(e.history_id) for e in events]
        # Every change of the object exactly once, in history-id order (the order its changes
        # committed: each writer held the object's row lock).
        assert ids == expected[pk], f"order {pk}: delivered {ids}, recorded {expected[pk]}"
        assert [e.history_type for e in events] == ["+"] + ["~"] * (len(events) - 1)
        assert events[0].old is None
        # Each delivered old is the state the previous delivery left.
        for before, after in itertools.pairwise(events):
            assert after.old == before.new, (pk, before.history_id, before.new, after.old)
        row = Order.objects.get(pk=pk)
        assert events[-1].new is not None
        assert (events[-1].new["status"], Decimal(events[-1].new["total"])) == (
            row.status,
            row.total,
        )
        changes += len(events)
    # The writers really overlapped: shared orders changed by several writers.
    writers_per_order = [
        len({str((e.new or {})["status"]).split("r")[0] for e in delivered[pk][1:]})
        for pk in shared_pks
    ]
    assert max(writers_per_order) > 1, writers_per_order
    assert not Notification.objects.exists(), queue_state()
    print(f"{changes} changes of {len(pks)} orders in order; deadlocks retried {deadlocks}")


# -- a listener that outlasts the lease, in a batch run together -------------------------------


def test_a_listener_longer_than_the_lease_keeps_its_batch_from_being_reaped(manage, tmp_path):
    """A batch runs together: the rows before a slow listener are not locked until the batch
    ends. The slow listener runs 2.5 leases while a second worker sweeps every 0.3 s: the first
    worker's watchdog extends the leases of the batch, so nothing is reaped as a dead worker's,
    every order is delivered once, and the slow callback ran once."""
    customer = Customer.objects.create(name="long-listener")
    with transaction.atomic():  # one batch: fine ones, then the slow one, then more
        before = [Order.objects.create(customer=customer, status=f"before{i}") for i in range(3)]
        slow = Order.objects.create(customer=customer, status="slow")
        after = [Order.objects.create(customer=customer, status=f"after{i}") for i in range(3)]
    marker = tmp_path / "slow-runs"
    env = {
        "PSH_LEASE_SECONDS": "2",
        "PSH_RELEASE_AFTER": "0.5",
        "SHOP_SLOW_MARKER": str(marker),
        "SHOP_SLOW_SECONDS": "5",
    }
    first = manage("listen", "--sweep-interval", "0.3", env=env)
    expect(marker.exists, 30, "the slow callback started", lambda: tail(first))
    second = manage("listen", "--sweep-interval", "0.3", env=env)
    expect(
        lambda: all_once([*before, slow, *after]),
        timeout=40,
        what="every order processed once",
        explain=lambda: f"{deliveries([*before, slow, *after])}; {tail(first)}; {tail(second)}",
    )
    time.sleep(1.0)  # a reaped row would be run again by now
    assert stop(first) == 0 and stop(second) == 0
    assert deliveries([*before, slow, *after]) == {o.pk: 1 for o in [*before, slow, *after]}
    assert len(marker_runs(marker)) == 1
    assert not Notification.objects.exists()
    for proc in (first, second):
        assert "ended without settling" not in proc.stderr_text(), tail(proc)
