"""The wake-up protocol (waking.py, sql/enqueue_v1.sql): writers skip NOTIFY while a worker
is awake. Nothing may be lost by it, and no change may wait longer than a sweep interval."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest
from django.db import connection

from testproject.shop.channels import OrderChannel
from testproject.shop.factories import OrderFactory

from .conftest import wait_for
from .test_faults import report_for_orders

pytestmark = pytest.mark.django_db(transaction=True)


def _awake_workers(name: str) -> int:
    """Workers holding the channel's wake-up key (shared advisory locks)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 29555 "
            "AND objid = hashtext(%s)::oid AND mode = 'ShareLock' AND granted",
            [name],
        )
        return int(cursor.fetchone()[0])


def _probe(name: str) -> bool:
    """What a writer's enqueue does: can it take the wake-up key (no worker awake)?"""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(29555, hashtext(%s))", [name])
        taken = cursor.fetchone()[0]
        if taken:
            cursor.execute("SELECT pg_advisory_unlock(29555, hashtext(%s))", [name])
    return bool(taken)


def test_an_awake_worker_makes_writers_skip_notify_and_a_sleeping_one_is_woken(manage, tmp_path):
    from testproject.shop.models import ReceivedEvent

    name = OrderChannel.listen_safe_name()
    marker = tmp_path / "slow"
    proc = manage(
        "listen", "--sweep-interval", "30",  # a long sweep: only doorbells and claims deliver
        env={"SHOP_SLOW_MARKER": str(marker), "SHOP_SLOW_SECONDS": "1.5"},
    )  # fmt: skip
    wait_for(lambda: "worker ready" in proc.stderr_text(), timeout=30)
    wait_for(lambda: _awake_workers(name) == 0 and _probe(name), timeout=10)  # asleep

    # Asleep: a change rings the doorbell and wakes it.
    first = OrderFactory(status="wakes it")
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(first.pk)).exists(), timeout=5)
    # Awake while it drains (here: a slow listener): a writer's probe fails, it skips NOTIFY.
    OrderFactory(status="slow")
    wait_for(marker.exists, timeout=10)
    assert _awake_workers(name) == 1 and not _probe(name)
    during = OrderFactory(status="while awake")  # no doorbell for this one
    # When the queue is empty it falls asleep (the key is free again), having delivered the
    # change whose writer skipped the doorbell: long before the 30 s sweep.
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(during.pk)).exists(), timeout=5)
    wait_for(lambda: _awake_workers(name) == 0 and _probe(name), timeout=5)
    second = OrderFactory(status="wakes it again")
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(second.pk)).exists(), timeout=5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_nobody_listening_means_no_doorbell_and_a_worker_that_connects_misses_nothing(
    manage, notify_capture
):
    """No worker connected: a writer sends no NOTIFY (its commit takes no NOTIFY lock) and the
    change is stored. A worker that connects while a writer that saw nobody listening is still
    in flight delivers that change once it commits, long before any sweep; once a worker is
    connected and asleep, writers ring again."""
    from django.db import connection as thread_connection
    from django.db import transaction

    from testproject.shop.models import ReceivedEvent

    capture = notify_capture(OrderChannel)  # LISTENs, but holds no key: not a worker
    stored = OrderFactory(status="nobody listens")
    time.sleep(0.3)
    assert capture() == [], "a doorbell although no worker was connected"

    opened, release = threading.Event(), threading.Event()
    in_flight: list[int] = []

    def writer() -> None:  # sees nobody listening, commits after the worker has swept
        try:
            with transaction.atomic():
                in_flight.append(OrderFactory(status="in flight at start").pk)
                opened.set()
                release.wait(30)
        finally:
            thread_connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    assert opened.wait(10)
    proc = manage("listen", "--sweep-interval", "30")  # claims at start, then on doorbells only
    wait_for(lambda: "worker ready" in proc.stderr_text(), timeout=30)
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(stored.pk)).exists(), timeout=5)
    time.sleep(0.5)  # the worker has swept and is waiting
    release.set()
    thread.join(10)
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(in_flight[0])).exists(), timeout=5)
    assert capture() == [], "the writer in flight rang although nobody listened when it wrote"

    rung = OrderFactory(status="someone listens")  # connected and asleep: the doorbell rings
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(rung.pk)).exists(), timeout=5)
    assert capture() == [""]  # one doorbell (an empty payload)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_the_later_changes_of_one_object_stored_together_wait_for_no_sweep(manage):
    """A claim takes one change per object, so a batch that settles fewer than it asked for
    ends the drain while the later changes of its objects become due: the worker claims them
    as it falls asleep. Stored in one transaction, they are all delivered, in order, long
    before the 30 s sweep."""
    from django.db import transaction

    from testproject.shop.models import ReceivedEvent

    name = OrderChannel.listen_safe_name()
    proc = manage("listen", "--sweep-interval", "30")
    wait_for(lambda: "worker ready" in proc.stderr_text(), timeout=30)
    wait_for(lambda: _awake_workers(name) == 0 and _probe(name), timeout=10)  # asleep
    for round_ in range(3):  # asleep, and again right after it fell asleep
        with transaction.atomic():
            order = OrderFactory(status=f"{round_}-0")
            for i in range(1, 8):
                order.status = f"{round_}-{i}"
                order.save()
        started = time.monotonic()
        wait_for(
            lambda o=order: (
                ReceivedEvent.objects.filter(listener="on_order_saved", object_id=str(o.pk)).count()
                == 8
            ),
            timeout=10,
        )
        assert time.monotonic() - started < 5
        received = ReceivedEvent.objects.filter(
            listener="on_order_saved", object_id=str(order.pk)
        ).order_by("id")
        assert [e.new["status"] for e in received] == [f"{round_}-{i}" for i in range(8)]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.mark.slow
def test_no_change_is_lost_while_workers_start_stop_die_and_reconnect_at_random(manage):
    """A writer streams changes while workers are started, stopped (SIGTERM), killed (SIGKILL)
    and have their sessions terminated at random moments; then one worker runs to the end.
    Every change is delivered exactly once, and none waited longer than the sweep interval plus
    a margin once a worker was running steadily."""
    rng = random.Random(20261202)
    sweep = 1.0
    writer = manage(
        "stream_orders", "--count", "1500", "--objects", "30", "--rate", "150", "--tag", "wake"
    )
    workers: list = []
    deadline = time.monotonic() + 40
    while writer.poll() is None and time.monotonic() < deadline:
        action = rng.choice(["start", "start", "stop", "kill", "terminate"])
        alive = [w for w in workers if w.poll() is None]
        if action == "start" or not alive:
            workers.append(manage("listen", "--sweep-interval", str(sweep)))
        elif action == "stop":
            alive[0].send_signal(signal.SIGTERM)
        elif action == "kill":
            alive[-1].kill()
        else:
            with connection.cursor() as cursor:
                # every other session: the workers' (they reconnect) and the writer's (it retries)
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                )
        time.sleep(rng.uniform(0.1, 0.8))
    assert writer.wait(60) == 0, writer.stderr_text()[-2000:]
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(30)

    # One worker to the end: leases of killed workers run out (10 s), then every change is in.
    final = manage("listen", "--sweep-interval", str(sweep), env={"PSH_LEASE_SECONDS": "2"})
    with connection.cursor() as cursor:

        def complete() -> bool:
            report = report_for_orders(cursor, "wake")
            return report["sent"] >= 1500 and report["lost"] == 0

        wait_for(complete, timeout=60, interval=0.5)
        report = report_for_orders(cursor, "wake")
    assert report["duplicated"] == 0, report

    # Steady state: with the final worker running, a new change's wait is bounded by the sweep.
    from testproject.shop.models import ReceivedEvent

    lags = []
    for i in range(20):
        order = OrderFactory(status=f"steady {i}")
        started = time.monotonic()
        wait_for(lambda o=order: ReceivedEvent.objects.filter(object_id=str(o.pk)).exists())
        lags.append(time.monotonic() - started)
        time.sleep(rng.uniform(0.0, 0.7))  # land in every phase: awake, lingering, asleep
    assert max(lags) <= sweep + 1.0, lags
    final.send_signal(signal.SIGTERM)
    assert final.wait(20) == 0


def test_a_claim_takes_the_awake_keys_it_is_given_unless_a_writer_probes_one():
    """The claim's own statement takes the awake keys (no round trip of its own): held after it
    returns, also when it claimed nothing; a key a writer holds at that instant is not taken
    (that writer rings), and the claim claims all the same."""
    from pgpubsub_simplehistory import queue
    from pgpubsub_simplehistory.waking import AWAKE_CLASS

    assert f"({AWAKE_CLASS}, hashtext(name))" in queue.queries()["claim"]
    name = OrderChannel.listen_safe_name()
    args = ([name], [name], 10)
    rows, woke = queue.claim(*args, worker="w", lease_seconds=10, using="default", wake=[name])
    assert rows == [] and woke == [name]
    assert _awake_workers(name) == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock_shared(%s, hashtext(%s))", [AWAKE_CLASS, name])
    assert _awake_workers(name) == 0

    writer = connection.get_new_connection(connection.get_connection_params())
    writer.autocommit = True
    try:
        with writer.cursor() as cursor:  # a writer probing the key at this instant
            cursor.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [AWAKE_CLASS, name])
            order = OrderFactory(status="writer probing")
            rows, woke = queue.claim(
                *args, worker="w", lease_seconds=10, using="default", wake=[name]
            )
            assert woke == [] and [row.object_id for row in rows] == [str(order.pk)]
            assert _awake_workers(name) == 0
    finally:
        writer.close()
