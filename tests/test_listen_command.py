"""``manage.py listen`` in a real subprocess."""

from __future__ import annotations

import signal

import pytest

from pgpubsub_simplehistory.models import Notification
from testproject.shop.factories import OrderFactory
from testproject.shop.models import ReceivedEvent

from .conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]


def test_listen_processes_stored_backlog_then_live_changes_and_stops_on_sigterm(manage):
    early = OrderFactory(status="while-down")  # stored while no listener runs
    proc = manage("listen", "--loglevel", "debug")
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(early.pk)).exists())
    live = OrderFactory(status="live")
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(live.pk)).exists())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    stderr = proc.stderr_text()
    assert "listening on testproject.shop.channels.OrderChannel" in stderr
    assert "processed channel testproject.shop.channels.OrderChannel" in stderr
    assert Notification.objects.count() == 0
    assert ReceivedEvent.objects.filter(listener="on_order_saved").count() == 2


def test_listen_with_unknown_channel_fails_with_a_clear_error(manage):
    proc = manage("listen", "--channels", "testproject.shop.channels.NoSuchChannel")
    assert proc.wait(30) == 2
    stderr = proc.stderr_text()
    assert "channel or subscription 'testproject.shop.channels.NoSuchChannel' not found" in stderr
    assert "Traceback" not in stderr


def test_listen_help(manage):
    proc = manage("listen", "--help")
    assert proc.wait(30) == 0
    out = proc.stdout_text()
    for option in ("--channels", "--processes", "--recover", "--sweep-interval"):
        assert option in out


def test_listen_logformat_json_writes_one_object_per_line_with_the_fields(manage):
    import json

    order = OrderFactory(status="json-log")
    proc = manage("listen", "--logformat", "json", "--loglevel", "debug")
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(order.pk)).exists())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    lines = [json.loads(line) for line in proc.stderr_text().splitlines() if line.strip()]
    processed = [
        line
        for line in lines
        if line.get("outcome") == "processed" and line.get("model") == "shop.Order"
    ]
    assert len(processed) == 1
    [line] = processed
    assert line["channel"] == "testproject.shop.channels.OrderChannel"
    assert line["history_id"] == str(order.history.get().history_id)
    assert line["level"] == "DEBUG" and line["duration_ms"] > 0 and line["attempt"] == 1
    assert line["lag_ms"] >= 0


def test_at_info_a_backlog_is_one_line_and_a_summary_per_channel_not_a_line_each(manage):
    """300 stored notifications: no line per notification at INFO, one "drained" line, then a
    summary per channel with its lag percentiles and backlog; full level names, the worker's
    pid."""
    import re

    from testproject.shop.factories import CustomerFactory
    from testproject.shop.models import Order

    from .conftest import wait_for

    customer = CustomerFactory()
    for _ in range(300):
        Order.objects.create(customer=customer)
    proc = manage("listen", env={"PSH_SUMMARY_INTERVAL": "1"})
    wait_for(lambda: "processed, " in proc.stderr_text(), timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    lines = proc.stderr_text().splitlines()
    assert not [line for line in lines if "processed channel" in line]
    [drained] = [line for line in lines if "drained" in line]
    assert re.search(r"\bINFO\b .*\[\d+\] drained 300 notification\(s\) in [\d.]+ s", drained)
    summary = next(line for line in lines if "OrderChannel: " in line and "processed" in line)
    assert "300 processed, 0 retried, 0 parked, 0 failed" in summary
    assert re.search(r"lag p50 <[\d.]+ m?s, p95 <[\d.]+ m?s; 0 pending, 0 parked", summary)
    assert all(" INFO " in line or " WARNING " in line for line in lines if line[:2] == "20")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--processes", "0"], "--processes must be at least 1, not 0"),
        (["--loglevel", "loud"], "unknown --loglevel 'loud'"),
        (["--logformat", "%(foo"], "invalid --logformat '%(foo'"),
        (["--sweep-interval", "0"], "--sweep-interval must be positive"),
        (["--channels", "nope"], "channel or subscription 'nope' not found"),
    ],
)
def test_listen_bad_input_is_one_line_and_exit_2(manage, args, expected):
    proc = manage("listen", *args)
    assert proc.wait(30) == 2
    err = proc.stderr_text().strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_listen_with_the_database_down_is_one_line_and_exit_2(manage):
    proc = manage("listen", url="postgresql://postgres@127.0.0.1:9/nowhere")
    assert proc.wait(30) == 2
    [line] = proc.stderr_text().strip().splitlines()
    assert "unreachable" in line and "nowhere" in line


def test_listen_version_is_this_librarys(manage):
    proc = manage("listen", "--version")
    assert proc.wait(30) == 0
    assert proc.stdout_text().startswith("pgpubsub-simplehistory ")
