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
    proc = manage("listen", "--loglevel", "info")
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
    assert proc.wait(30) == 1
    stderr = proc.stderr_text()
    assert "channel 'testproject.shop.channels.NoSuchChannel' not found" in stderr
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
    proc = manage("listen", "--logformat", "json")
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
    assert line["level"] == "INFO" and line["duration_ms"] > 0 and line["attempt"] == 1
