"""Reliability II, the findings that need no extra process (tests/test_faults_ii.py has the
others): odd NOTIFY payloads, clocks that disagree, large contexts, replayed contexts, removed
models, and logs, signals and retry times of committed outcomes only."""

from __future__ import annotations

import datetime
import json
import logging
import signal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DataError, connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgpubsub.channel import set_notification_context

from pgpubsub_simplehistory import InvalidPayload
from pgpubsub_simplehistory.models import Notification
from pgpubsub_simplehistory.payload import HistoryPointer
from testproject.shop.channels import CustomerChannel, OrderChannel
from testproject.shop.factories import CustomerFactory, OrderFactory
from testproject.shop.models import Order, ReceivedEvent

from .conftest import wait_for

# -- 1. no payload stops a worker ------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)
KEYS = ("app", "model", "history_model", "history_id", "history_type", "object_id", "context")


@st.composite
def shaped_like_ours(draw: st.DrawFn) -> dict[str, object]:
    """Our payload's keys with values of any shape: what gets past a naive key check."""
    return {key: draw(JSON) for key in KEYS if draw(st.booleans())} | {
        "migration_id_at_change": draw(JSON),
        "notification_id": draw(JSON),
    }


def _parses_or_says_why(raw: str | bytes) -> None:
    try:
        pointer = HistoryPointer.parse(raw)
    except InvalidPayload as exc:
        assert str(exc)
    else:
        assert pointer.history_type in ("+", "~", "-")
        assert isinstance(pointer.model, str) and isinstance(pointer.history_model, str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON.map(json.dumps), shaped_like_ours().map(json.dumps)))
def test_any_json_is_parsed_or_refused_with_invalid_payload(raw):
    _parses_or_says_why(raw)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_any_text_or_bytes_is_parsed_or_refused_with_invalid_payload(raw):
    _parses_or_says_why(raw)


@pytest.mark.parametrize(
    "raw",
    [
        '{"app": "shop", "model": "Order", "history_model": "shop.HistoricalOrder", '
        '"history_id": 1, "history_type": ["x"]}',
        "[" * 3000 + "]" * 3000,
        '{"app": {"a": 1}, "model": "Order", "history_model": "h", "history_id": 1, '
        '"history_type": "+"}',
        '{"app": "shop", "model": "Order", "history_model": "h", "history_id": true, '
        '"history_type": "+"}',
        '{"app": "shop", "model": "Order", "history_model": "h", "history_id": 1, '
        '"history_type": "+", "context": ' + "[" * 2000 + "]" * 2000 + "}",
    ],
)
def test_the_payloads_that_killed_the_worker_are_invalid(raw):
    with pytest.raises(InvalidPayload):
        HistoryPointer.parse(raw)


def test_a_real_worker_survives_odd_notifies_on_every_kind_of_channel(manage):
    proc = manage("listen", "--sweep-interval", "0.5")
    wait_for(lambda: "worker ready" in proc.stderr_text(), timeout=30)
    odd = [
        '{"app": "shop", "model": "Customer", "history_model": "shop.HistoricalCustomer", '
        '"history_id": 1, "history_type": ["x"]}',
        "[" * 3000 + "]" * 3000,
        "\x01 not json",
    ]
    with connection.cursor() as cursor:
        for channel in (CustomerChannel, OrderChannel):
            for payload in odd:
                cursor.execute("SELECT pg_notify(%s, %s)", [channel.listen_safe_name(), payload])
    order = OrderFactory(status="after odd notifies")
    wait_for(lambda: ReceivedEvent.objects.filter(object_id=str(order.pk)).exists())
    assert proc.poll() is None
    errors = [line for line in proc.stderr_text().splitlines() if "invalid notification" in line]
    assert len(errors) == len(odd)  # each odd NOTIFY of the non-lockable channel: one line
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


# -- 6. old and replay follow delivery order, whatever the clocks ----------------------------


def test_old_and_replay_follow_delivery_order_when_a_clock_is_behind(worker):
    order = OrderFactory(status="one")
    order.status = "two"
    order.save()
    order.status = "three"  # written by a server whose clock is an hour behind
    order._history_date = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    order.save()
    del order._history_date
    worker.drain()
    events = list(ReceivedEvent.objects.filter(listener="on_order_saved").order_by("id"))
    assert [e.new["status"] for e in events] == ["one", "two", "three"]
    assert [e.old and e.old["status"] for e in events] == [None, "one", "two"]
    ReceivedEvent.objects.all().delete()
    call_command("replay_history", "--model", "shop.Order", "--object", str(order.pk), "-v", "0")
    replayed = list(ReceivedEvent.objects.order_by("id"))
    assert [(e.old and e.old["status"], e.new["status"]) for e in replayed] == [
        (None, "one"),
        ("one", "two"),
        ("two", "three"),
    ]
    since = (
        datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    ).isoformat()
    ReceivedEvent.objects.all().delete()
    call_command(
        "replay_history", "--model", "shop.Order", "--object", str(order.pk), "--since", since,
        "-v", "0",
    )  # fmt: skip
    # From the first record at or after --since in history order: "three" is not missed.
    assert [e.new["status"] for e in ReceivedEvent.objects.order_by("id")] == [
        "one",
        "two",
        "three",
    ]


# -- 7. the write path and large contexts ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_large_context_does_not_fail_a_lockable_channels_save(worker):
    context = {"note": "x" * 8_000}
    customer = CustomerFactory()  # its channel is not lockable: its NOTIFY carries the context
    with transaction.atomic():
        set_notification_context(context)
        order = OrderFactory(status="with a large context", customer=customer)
    assert Notification.objects.get().context == context
    worker.drain()
    [event] = ReceivedEvent.objects.filter(listener="on_order_saved", object_id=str(order.pk))
    assert event.new["status"] == "with a large context"
    assert Order.objects.filter(pk=order.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_non_lockable_notification_over_the_notify_limit_is_a_clear_error():
    context = {"note": "x" * 8_000}
    with pytest.raises(DataError) as raised, transaction.atomic():
        set_notification_context(context)
        CustomerFactory(name="too large")
    message = str(raised.value)
    assert "over the 7999 bytes NOTIFY allows" in message
    assert "CustomerChannel" in message or CustomerChannel.listen_safe_name() in message
    assert "lock_notifications = True" in message  # the hint
    assert not CustomerChannel.model.objects.filter(name="too large").exists()


# -- 8. replay keeps the context of a stored notification ------------------------------------


@pytest.mark.django_db(transaction=True)
def test_replay_gives_the_context_of_a_notification_still_stored():
    from pgpubsub_simplehistory import replay, subscribe, unsubscribe

    with transaction.atomic():
        set_notification_context({"request": "abc"})
        order = OrderFactory(status="explode")  # not processed yet: its notification is stored
    seen: list[dict[str, object]] = []

    def capture(event):
        seen.append(event.context)

    subscribe(OrderChannel, capture, frozenset("+"))
    try:
        result = replay("shop.Order", object_ids=[order.pk], listener=capture)
        # Once processed (here: purged), the context is gone with the notification, as
        # docs/how-to/replay.md says; the record itself replays the same.
        Notification.objects.filter(object_id=str(order.pk)).delete()
        again = replay("shop.Order", object_ids=[order.pk], listener=capture)
    finally:
        unsubscribe(OrderChannel, capture)
    assert result.replayed == 1 and again.replayed == 1
    assert seen == [{"request": "abc"}, {}]


# -- 11. removed models, and health counting them --------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_notifications_of_a_removed_model_are_parked_and_counted(worker, caplog):
    gone = Notification.objects.create(
        listen_name="pgpubsub_0ld00",
        model="shop.Coupon",  # an app of this project, a model it no longer has
        history_model="shop.HistoricalCoupon",
        history_id="1",
        history_type="+",
        object_id="1",
    )
    foreign = Notification.objects.create(
        listen_name="pgpubsub_0the7",
        model="billing.Invoice",  # an app this project does not have: another project's
        history_model="billing.HistoricalInvoice",
        history_id="1",
        history_type="+",
        object_id="1",
    )
    with caplog.at_level(logging.ERROR, logger="pgpubsub_simplehistory"):
        worker.sweep()
    gone.refresh_from_db()
    foreign.refresh_from_db()
    assert gone.state == "parked" and "shop.Coupon" in gone.last_error
    assert "is not installed" in gone.last_error and "removed from app 'shop'" in gone.last_error
    assert foreign.state == "pending"
    assert any("shop.Coupon" in r.getMessage() for r in caplog.records)
    with pytest.raises(CommandError, match="1 parked > 0") as exc:
        call_command("listener_health", "--max-parked", "0", stdout=StringIO())
    assert exc.value.returncode == 1


# -- 13. logs, signals and retry times of committed outcomes ---------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_failure_at_commit_is_logged_once_per_attempt_and_never_as_processed(worker, caplog):
    from pgpubsub_simplehistory import notification_failed, notification_processed

    sent: list[str] = []

    def processed(sender, **kwargs):
        sent.append(f"processed {kwargs['history_id']}")

    def failed(sender, **kwargs):
        sent.append(f"failed {kwargs['history_id']}")

    notification_processed.connect(processed)
    notification_failed.connect(failed)
    try:
        with caplog.at_level(logging.DEBUG, logger="pgpubsub_simplehistory"):
            order = OrderFactory(status="dangling")
            worker.sweep()
    finally:
        notification_processed.disconnect(processed)
        notification_failed.disconnect(failed)
    history_id = str(order.history.get().pk)
    assert sent == [f"failed {history_id}"]
    lines = [r for r in caplog.records if getattr(r, "history_id", None) == history_id]
    assert [(r.levelname, r.outcome) for r in lines] == [("ERROR", "retry")]
    assert "commit failed: IntegrityError" in lines[0].getMessage()
    assert "retry in 1.0s" in lines[0].getMessage()  # relative, not a timestamp


@pytest.mark.django_db(transaction=True)
def test_retry_times_are_on_the_databases_clock(worker, monkeypatch):
    from django.utils import timezone

    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + datetime.timedelta(days=3))
    OrderFactory(status="explode")
    worker.sweep()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM available_at - now()) FROM "
            "pgpubsub_simplehistory_notification"
        )
        (seconds,) = cursor.fetchone()
    assert 0 < float(seconds) <= OrderChannel.retry_base_delay  # not three days ahead
