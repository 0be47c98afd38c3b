"""Structured log lines and Django signals for processed, failed and parked notifications."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pgpubsub_simplehistory import (
    JsonFormatter,
    notification_failed,
    notification_parked,
    notification_processed,
)
from pgpubsub_simplehistory.models import Notification
from testproject.shop.channels import CustomerChannel, OrderChannel
from testproject.shop.factories import CustomerFactory, OrderFactory

from .conftest import DrainingWorker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def quick_listener(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(OrderChannel, "max_attempts", 2)
    monkeypatch.setattr(OrderChannel, "retry_base_delay", 0.05)
    monkeypatch.setattr(OrderChannel, "retry_max_delay", 0.05)
    lst = DrainingWorker(sweep_interval=0.05)
    lst.start()
    yield lst
    lst.close()


@pytest.fixture
def sent() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every signal sent, as (signal name, kwargs) — plus whether the row still existed then."""
    received: list[tuple[str, dict[str, Any]]] = []
    receivers = {}
    for name, signal in [
        ("processed", notification_processed),
        ("failed", notification_failed),
        ("parked", notification_parked),
    ]:

        def receiver(sender: Any, name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal")
            kwargs["sender"] = sender
            notification_id = kwargs["notification_id"]
            kwargs["row_state"] = (
                Notification.objects.filter(pk=notification_id)
                .values_list("state", flat=True)
                .first()
                if notification_id
                else None
            )
            if sender is OrderChannel or sender is CustomerChannel:
                received.append((name, kwargs))

        signal.connect(receiver, weak=False)
        receivers[signal] = receiver
    yield received
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


def orders(sent: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, kwargs) for name, kwargs in sent if kwargs["sender"] is OrderChannel]


def test_processed_signal_is_sent_after_commit_with_the_notification_fields(quick_listener, sent):
    order = OrderFactory(status="fine")
    quick_listener.drain()
    [(name, kwargs)] = orders(sent)
    assert name == "processed"
    history = order.history.get()
    assert kwargs["sender"] is OrderChannel
    assert kwargs["channel"] == OrderChannel.name()
    assert kwargs["model"] == "shop.Order"
    assert kwargs["history_id"] == str(history.history_id)
    assert kwargs["history_type"] == "+"
    assert kwargs["attempt"] == 1
    assert kwargs["error"] is None
    assert 0 < kwargs["duration"] < 10
    # Sent after the commit that deleted the processed row.
    assert kwargs["row_state"] is None


def test_failed_then_parked_signals_carry_the_error(quick_listener, sent):
    OrderFactory(status="explode")
    quick_listener.drain(quiet=0.5)
    assert [(name, kw["attempt"]) for name, kw in orders(sent)] == [("failed", 1), ("parked", 2)]
    for _, kwargs in orders(sent):
        assert isinstance(kwargs["error"], RuntimeError)
        assert "refuses order" in str(kwargs["error"])
    # Each was sent after its settlement committed: the row shows the state the signal announces.
    assert [kw["row_state"] for _, kw in orders(sent)] == ["pending", "parked"]


def test_unresolvable_notification_sends_parked_at_first_attempt(quick_listener, sent):
    order = OrderFactory(status="fine")
    order.history.all().delete()  # history gone before the listener ran
    quick_listener.drain()
    [(name, kwargs)] = orders(sent)
    assert (name, kwargs["attempt"], kwargs["row_state"]) == ("parked", 1, "parked")
    assert "no longer exist" in str(kwargs["error"])


def test_non_lockable_channel_sends_processed_without_notification_id(worker, sent):
    CustomerFactory()
    worker.drain()
    [(name, kwargs)] = [s for s in sent if s[1]["sender"] is CustomerChannel]
    assert (name, kwargs["notification_id"], kwargs["history_type"]) == ("processed", None, "+")


def test_failing_receiver_is_logged_and_does_not_stop_processing(quick_listener, caplog):
    def broken(sender: Any, **kwargs: Any) -> None:
        raise ValueError("metrics backend down")

    notification_processed.connect(broken, sender=OrderChannel, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="django.dispatch"):
            OrderFactory(status="fine")
            OrderFactory(status="fine")
            quick_listener.drain()
    finally:
        notification_processed.disconnect(broken, sender=OrderChannel)
    assert not Notification.objects.exists()
    assert sum("metrics backend down" in r.getMessage() for r in caplog.records) == 2


def test_log_lines_carry_structured_fields(quick_listener, caplog):
    with caplog.at_level(logging.DEBUG, logger="pgpubsub_simplehistory"):
        good = OrderFactory(status="fine")
        OrderFactory(status="explode")
        quick_listener.drain(quiet=0.5)
    lines = [r for r in caplog.records if getattr(r, "model", None) == "shop.Order"]
    outcomes = sorted(r.outcome for r in lines)  # type: ignore[attr-defined]
    assert outcomes == ["parked", "processed", "retry"]
    processed = next(r for r in lines if r.outcome == "processed")  # type: ignore[attr-defined]
    assert processed.channel == OrderChannel.name()  # type: ignore[attr-defined]
    assert processed.model == "shop.Order"  # type: ignore[attr-defined]
    assert processed.history_id == str(good.history.get().history_id)  # type: ignore[attr-defined]
    assert processed.duration_ms > 0  # type: ignore[attr-defined]
    assert processed.levelno == logging.DEBUG  # one line per notification only at DEBUG
    failed = [r for r in lines if r.outcome != "processed"]  # type: ignore[attr-defined]
    assert all(r.exc_info and r.levelno == logging.ERROR for r in failed)
    # One traceback per failure: the listener's, not chained through this package's wrappers.
    assert all("listener refuses order" in str(r.exc_info[1]) for r in failed)


def test_json_formatter_writes_one_object_with_the_fields():
    record = logging.LogRecord(
        "pgpubsub_simplehistory", logging.INFO, __file__, 1, "hi %s", ("x",), None
    )
    record.channel = "app.Channel"
    record.history_id = "7"
    record.duration_ms = 1.5
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hi x"
    assert (line["channel"], line["history_id"], line["duration_ms"]) == ("app.Channel", "7", 1.5)
    assert "model" not in line
    assert line["time"].endswith("Z")


@pytest.mark.django_db(transaction=True)
def test_the_worker_log_says_what_is_held_back_behind_a_parked_notification(caplog):
    from django.test import override_settings

    from pgpubsub_simplehistory.models import Notification

    from .conftest import DrainingWorker

    order = OrderFactory(status="explode")
    order.status = "later"
    order.save()
    first = Notification.objects.order_by("pk").first()
    Notification.objects.filter(pk=first.pk).update(state="parked", last_error="boom")
    with (
        override_settings(PGPUBSUB_SIMPLEHISTORY_SUMMARY_INTERVAL=0),
        caplog.at_level(logging.INFO, logger="pgpubsub_simplehistory"),
    ):
        worker = DrainingWorker(sweep_interval=3600)
        worker.start()
        try:
            worker.process_available(timeout=0.1)
        finally:
            worker.close()
    [line] = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
    assert f"1 held back by parked #{first.pk} (object {order.pk})" in line
    assert OrderChannel.name() in line and "manage.py parked" in line
