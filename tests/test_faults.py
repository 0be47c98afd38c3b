"""Fault tests: real listener subprocesses, real Postgres, loopback only, each bounded in time.

Every test checks the ground truth: each historical record of the orders written is delivered to
``on_order_saved`` exactly once (its DB effect, a ReceivedEvent row, committed once), none lost.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from django.db import connection
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from pgpubsub_simplehistory.models import Notification
from testproject.pgembed import PrivateCluster
from testproject.shop.factories import CustomerFactory, OrderFactory
from testproject.shop.models import Order, ReceivedEvent

from .conftest import MANAGE, subprocess_database_url, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]

LISTENER_APP = "psh-listener"


def listener_url(url: str) -> str:
    return url + ("&" if "?" in url else "?") + f"application_name={LISTENER_APP}"


def delivery_report(rows: list[tuple[str, int]]) -> dict[str, int]:
    """rows: (history_id, deliveries) for every history record written."""
    return {
        "sent": len(rows),
        "lost": sum(1 for _, n in rows if n == 0),
        "duplicated": sum(1 for _, n in rows if n > 1),
    }


def report_for_orders(cursor: Any, customer_name: str | None = None) -> dict[str, int]:
    where = "WHERE c.name = %s" if customer_name else ""
    cursor.execute(
        f"""
        SELECT h.history_id::text, count(e.id)
        FROM shop_historicalorder h
        JOIN shop_customer c ON c.id = h.customer_id
        LEFT JOIN shop_receivedevent e
          ON e.listener = 'on_order_saved' AND e.history_id = h.history_id::text
        {where}
        GROUP BY h.history_id
        """,
        [customer_name] if customer_name else [],
    )
    return delivery_report(cursor.fetchall())


def report() -> dict[str, int]:
    with connection.cursor() as cursor:
        return report_for_orders(cursor)


def processed() -> int:
    return ReceivedEvent.objects.filter(listener="on_order_saved").count()


def stop(proc: subprocess.Popen[str], timeout: float = 20) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def write_record(name: str, value: Any) -> None:
    path = os.environ.get("PSH_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": name, **value}) + "\n")


def wait_ready(proc: Any) -> None:
    wait_for(lambda: "worker ready" in proc.stderr_text(), timeout=30)


def test_1_kill_9_in_the_middle_of_a_callback(manage, tmp_path):
    marker = tmp_path / "in-callback"
    order = OrderFactory(status="slow")
    history_id = str(order.history.get().pk)
    first = manage("listen", env={"SHOP_SLOW_MARKER": str(marker), "SHOP_SLOW_SECONDS": "60"})
    wait_for(marker.exists, timeout=30)
    first.kill()
    first.wait(10)
    # The callback had written inside the claiming transaction: nothing of it survived.
    assert not ReceivedEvent.objects.filter(history_id=history_id).exists()
    assert Notification.objects.filter(object_id=str(order.pk)).count() == 1

    second = manage("listen", env={"SHOP_SLOW_SECONDS": "0"})
    wait_for(lambda: ReceivedEvent.objects.filter(listener="on_order_saved").exists())
    assert stop(second) == 0
    assert ReceivedEvent.objects.filter(listener="on_order_saved:slow").count() == 1
    assert report() == {"sent": 1, "lost": 0, "duplicated": 0}
    assert not Notification.objects.exists()
    write_record("kill -9 mid-callback", {**report(), "faults": 1})


@pytest.fixture
def cluster() -> Iterator[tuple[PrivateCluster, str]]:
    private = PrivateCluster()
    url = private.start()
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "-v0"], env=env, check=True, timeout=120
    )
    yield private, url
    private.stop()


def test_2_server_restart_while_2000_changes_stream_in(cluster, manage):
    private, url = cluster
    listener = manage("listen", "--sweep-interval", "0.5", url=listener_url(url))
    writer = manage(
        "stream_orders", "--count", "2000", "--objects", "50", "--rate", "400", "--tag",
        "restart", url=url,
    )  # fmt: skip
    try:
        time.sleep(2.0)
        private.restart()
        assert writer.wait(120) == 0
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cursor:

            def done() -> bool:
                result = report_for_orders(cursor, "restart")
                return result["sent"] >= 2000 and result["lost"] == 0

            wait_for(done, timeout=90, interval=0.5)
            result = report_for_orders(cursor, "restart")
        conn.close()
    finally:
        code = stop(listener, 30)
    stderr = listener.stderr_text()
    assert "reconnecting" in stderr
    assert code == 0
    assert result["lost"] == 0 and result["duplicated"] == 0
    write_record("server restart during stream", {**result, "faults": 1})


def test_3_backends_terminated_several_times_during_a_stream(manage):
    proc = manage("listen", "--sweep-interval", "0.5", url=listener_url(subprocess_database_url()))
    wait_ready(proc)
    customer = CustomerFactory(name="terminated")

    def listener_backends(terminate: bool = False) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(CASE WHEN %s THEN pg_terminate_backend(pid) ELSE true END) "
                "FROM pg_stat_activity WHERE application_name = %s",
                [terminate, LISTENER_APP],
            )
            return int(cursor.fetchone()[0])

    terminations = 0
    for round_ in range(4):
        for i in range(150):
            Order.objects.create(customer=customer, status=f"r{round_}-{i}")
        wait_for(listener_backends, timeout=30)  # reconnected since the last round
        terminations += listener_backends(terminate=True)
    wait_for(lambda: report()["lost"] == 0, timeout=120, interval=0.3)
    assert stop(proc) == 0, proc.stderr_text()[-3000:]
    result = report()
    assert terminations >= 4
    assert result == {"sent": 600, "lost": 0, "duplicated": 0}
    write_record("pg_terminate_backend during stream", {**result, "faults": terminations})


@pytest.mark.slow
def test_4_four_processes_10000_changes_500_objects_exactly_once_in_order(manage):
    customer = CustomerFactory(name="parallel")
    orders = bulk_create_with_history(
        [Order(customer=customer, status="v0") for _ in range(500)], Order, batch_size=500
    )
    orders = list(Order.objects.filter(customer=customer).order_by("pk"))
    for version in range(1, 20):
        for order in orders:
            order.status = f"v{version}"
        bulk_update_with_history(orders, Order, ["status"], batch_size=500)
    assert Notification.objects.count() == 10_000

    proc = manage("listen", "--processes", "4", "--sweep-interval", "0.5")
    wait_for(lambda: processed() >= 10_000, timeout=180, interval=0.5)
    assert stop(proc, 30) == 0
    result = report()
    assert result == {"sent": 10_000, "lost": 0, "duplicated": 0}
    # Per object, deliveries (ReceivedEvent ids, assigned in commit order of the claiming
    # transactions) follow history order.
    out_of_order = 0
    by_object: dict[str, list[int]] = {}
    for history_id, object_id in (
        ReceivedEvent.objects.filter(listener="on_order_saved")
        .order_by("id")
        .values_list("history_id", "object_id")
    ):
        by_object.setdefault(object_id, []).append(int(history_id))
    for ids in by_object.values():
        out_of_order += sum(1 for a, b in itertools.pairwise(ids) if b < a)
    assert len(by_object) == 500 and out_of_order == 0
    write_record("4 processes, 500 objects", {**result, "faults": 0, "out_of_order": out_of_order})


def test_5_always_failing_listener_is_retried_then_parked_and_others_flow(manage):
    bad = OrderFactory(status="explode")
    good = [OrderFactory(status=f"ok{i}") for i in range(50)]
    env = {"SHOP_MAX_ATTEMPTS": "3", "SHOP_RETRY_BASE_DELAY": "0.1", "SHOP_RETRY_MAX_DELAY": "0.2"}
    proc = manage("listen", "--sweep-interval", "0.1", env=env)
    wait_for(lambda: Notification.objects.filter(state="parked").exists(), timeout=30)
    wait_for(lambda: processed() == 50, timeout=30)
    assert stop(proc) == 0
    parked = Notification.objects.get()
    assert (parked.object_id, parked.state, parked.attempts) == (str(bad.pk), "parked", 3)
    assert "listener refuses order" in parked.last_error
    assert {e.object_id for e in ReceivedEvent.objects.filter(listener="on_order_saved")} == {
        str(o.pk) for o in good
    }
    stderr = proc.stderr_text()
    assert stderr.count("retry in") == 2 and "parked after 3 attempts" in stderr
    write_record("always-failing listener", {"sent": 51, "lost": 0, "duplicated": 0, "parked": 1})


def test_6_bad_input_is_parked_or_logged_and_the_listener_stays_up(manage):
    proc = manage("listen", "--sweep-interval", "0.2")
    wait_ready(proc)
    bogus = Notification.objects.create(
        listen_name="pgpubsub_91c7e",  # OrderChannel
        model="shop.Order",
        history_model="shop.HistoricalOrder",
        history_id="424242",
        history_type="~",
        object_id="424242",
    )
    with connection.cursor() as cursor:
        from testproject.shop.channels import CustomerChannel, OrderChannel

        assert bogus.listen_name == OrderChannel.listen_safe_name()
        cursor.execute("SELECT pg_notify(%s, 'garbage')", [CustomerChannel.listen_safe_name()])
        cursor.execute("SELECT pg_notify(%s, %s)", [OrderChannel.listen_safe_name(), "{}"])
    order = OrderFactory(status="after bad input")
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(order.pk)).exists())
    wait_for(lambda: Notification.objects.get(pk=bogus.pk).state == "parked")
    assert proc.poll() is None
    assert stop(proc) == 0
    stderr = proc.stderr_text()
    assert "shop.HistoricalOrder history_id=424242" in stderr and "no longer exists" in stderr
    assert "payload is not JSON" in stderr


@pytest.mark.slow
def test_7_sigterm_during_a_backlog_then_restart_finishes_it(manage):
    customer = CustomerFactory(name="backlog")
    bulk_create_with_history(
        [Order(customer=customer, status=f"b{i}") for i in range(2000)], Order, batch_size=500
    )
    first = manage("listen")
    wait_for(lambda: processed() >= 100, timeout=30, interval=0.05)
    started = time.monotonic()
    assert stop(first, 10) == 0
    stopped_after = time.monotonic() - started
    done_first = processed()
    assert done_first < 2000, "the backlog was finished before SIGTERM: nothing was tested"
    assert report()["duplicated"] == 0

    second = manage("listen")
    wait_for(lambda: processed() >= 2000, timeout=90, interval=0.2)
    assert stop(second) == 0
    result = report()
    assert result == {"sent": 2000, "lost": 0, "duplicated": 0}
    assert stopped_after < 5
    write_record(
        "SIGTERM during backlog",
        {**result, "faults": 1, "processed_before_sigterm": done_first},
    )
