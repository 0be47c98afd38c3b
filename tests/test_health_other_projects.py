"""Pending notifications of another project sharing the database (its apps are not installed
here): a worker of this project leaves them pending by design (``parking.park_orphans``), and
``listener_health`` lists and counts them, in text and in JSON."""

from __future__ import annotations

import hashlib
import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from pgpubsub_simplehistory.models import Notification
from testproject.shop.models import Customer, Order, ReceivedEvent

from .conftest import DrainingWorker

pytestmark = pytest.mark.django_db(transaction=True)

#: The listen name another project's channel ``billing.channels.InvoiceChannel`` has (as
#: django-pgpubsub names channels: "pgpubsub_" and 5 hex digits of a sha1 of its class path).
OTHER = "pgpubsub_" + hashlib.sha1(b"billing.channels.InvoiceChannel").hexdigest()[:5]


def enqueue_for_the_other_project(history_id: int) -> None:
    """What the other project's history trigger does: the queue's own enqueue function."""
    hid = str(history_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pgpubsub_simplehistory_enqueue_v1(%s, %s, %s, %s, '+', %s, NULL, '')",
            [OTHER, "billing.Invoice", "billing.HistoricalInvoice", hid, hid],
        )


def health(*args: str) -> str:
    out = StringIO()
    call_command("listener_health", *args, stdout=out)
    return out.getvalue()


def test_listener_health_counts_pending_notifications_of_another_project(
    worker: DrainingWorker,
) -> None:
    for history_id in (1, 2, 3):
        enqueue_for_the_other_project(history_id)
    # One the other project's worker parked.
    enqueue_for_the_other_project(4)
    Notification.objects.filter(history_id="4").update(state="parked", last_error="theirs")
    order = Order.objects.create(customer=Customer.objects.create(name="us"), status="ours")
    worker.sweep()  # processes ours, looks for orphans, and leaves the other project's alone
    worker.drain()
    assert ReceivedEvent.objects.filter(listener="on_order_saved", object_id=str(order.pk))
    assert list(Notification.objects.order_by("history_id").values_list("history_id", "state")) == [
        ("1", "pending"),
        ("2", "pending"),
        ("3", "pending"),
        ("4", "parked"),
    ]

    text = health()
    [line] = [line for line in text.splitlines() if OTHER in line]
    assert re.fullmatch(rf"\(unknown\) {OTHER}: pending 3, parked 1, oldest pending \d+s", line), (
        text
    )
    assert "OrderChannel" not in text  # ours is done: nothing of it is waiting

    data = json.loads(health("--json"))
    [entry] = [c for c in data["channels"] if OTHER in c["channel"]]
    assert entry["channel"] == f"(unknown) {OTHER}"
    assert (entry["pending"], entry["parked"], entry["held_back"]) == (3, 1, 0), entry
    assert entry["oldest_pending_age"] >= 0
    assert data["ok"] is True and data["problems"] == []

    # Thresholds count them too: an alert on this project's probe names the listen name.
    with pytest.raises(CommandError) as raised:
        health("--max-pending", "2", "--max-parked", "0", "--json")
    assert raised.value.returncode == 1
    assert str(raised.value) == (
        f"(unknown) {OTHER}: 3 pending > 2; (unknown) {OTHER}: 1 parked > 0"
    )

    # pending_notifications lists them as well.
    out = StringIO()
    call_command("pending_notifications", stdout=out)
    [pending] = [line for line in out.getvalue().splitlines() if OTHER in line]
    assert re.match(rf"\(unknown\) {OTHER}\s+3\s", pending), out.getvalue()
