"""``replay_history`` and ``pgpubsub_simplehistory.replay``: every option and every bad input."""

from __future__ import annotations

import datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

import pgpubsub_simplehistory as psh
from pgpubsub_simplehistory.models import Notification
from testproject.shop.factories import CustomerFactory, OrderFactory
from testproject.shop.models import Order, ReceivedEvent

pytestmark = pytest.mark.django_db(transaction=True)

ORDER_LISTENER = "testproject.shop.listeners.on_order_saved"


def replay(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("replay_history", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def saved_events() -> list[ReceivedEvent]:
    return list(ReceivedEvent.objects.filter(listener="on_order_saved"))


@pytest.fixture
def history():
    """Order A: +, ~, ~ ; order B: +, then deleted. Notifications discarded: only replay runs."""
    a = OrderFactory(status="a0")
    for status in ("a1", "a2"):
        a.status = status
        a.save()
    b = OrderFactory(status="b0")
    b_id = b.pk
    b.delete()
    Notification.objects.all().delete()
    ReceivedEvent.objects.all().delete()
    return a, b_id


def test_replay_by_ids_gives_what_the_listener_gave(worker):
    order = OrderFactory(status="x")
    order.status = "y"
    order.save()
    worker.drain()
    live = {e.history_id: (e.old, e.new) for e in saved_events()}
    ReceivedEvent.objects.all().delete()

    ids = [str(h.pk) for h in order.history.order_by("history_id")]
    out, _ = replay(*ids, "--model", "shop.Order")

    assert "replayed 2, failed 0, skipped 0" in out
    events = saved_events()
    assert {e.history_id: (e.old, e.new) for e in events} == live
    assert all(e.extra["replayed"] is True for e in events)


def test_records_are_replayed_in_history_order(history):
    a, _ = history
    replay("--model", "shop.Order", "--object", str(a.pk))
    assert [e.new["status"] for e in saved_events()] == ["a0", "a1", "a2"]
    assert [e.old and e.old["status"] for e in saved_events()] == [None, "a0", "a1"]


def test_type_filter_and_skipped_records(history):
    out, _ = replay("--model", "shop.Order", "--type", "-", "--listener", ORDER_LISTENER)
    assert "replayed 0, failed 0, skipped 1" in out  # on_order_saved does not take deletes
    out, _ = replay("--model", "shop.Order", "--type", "-")
    assert "replayed 1, failed 0, skipped 0" in out
    assert ReceivedEvent.objects.get().listener == "on_order_deleted"


def test_since_until(history):
    a, _ = history
    records = list(a.history.order_by("history_date"))
    middle = records[1].history_date
    Order.history.filter(pk=records[0].pk).update(history_date=middle - datetime.timedelta(days=2))
    Order.history.filter(pk=records[2].pk).update(history_date=middle + datetime.timedelta(days=2))
    since = (middle - datetime.timedelta(seconds=1)).isoformat()
    until = (middle + datetime.timedelta(seconds=1)).isoformat()
    out, _ = replay(
        "--model", "shop.Order", "--object", str(a.pk), "--since", since, "--until", until
    )
    assert "replayed 1," in out
    assert [e.new["status"] for e in saved_events()] == ["a1"]
    # A date alone means the start of that day (--since) or its end (--until). --since selects
    # from the first record at or after it *in history order*: a2 (moved two days ahead), then
    # B's two records, written after it although their dates (another clock) say earlier.
    day = timezone.localdate(middle + datetime.timedelta(days=2)).isoformat()
    ReceivedEvent.objects.all().delete()
    out, _ = replay("--model", "shop.Order", "--since", day)
    assert "replayed 3," in out
    assert [(e.history_type, (e.new or e.old)["status"]) for e in ReceivedEvent.objects.all()] == [
        ("~", "a2"),
        ("+", "b0"),
        ("-", "b0"),
    ]


def test_channel_and_listener_selection(history):
    out, _ = replay(
        "--model",
        "shop.Order",
        "--all",
        "--channel",
        "testproject.shop.channels.OrderChannel",
        "--listener",
        ORDER_LISTENER,
    )
    assert "replayed 4, failed 0, skipped 1" in out
    assert {e.listener for e in ReceivedEvent.objects.all()} == {"on_order_saved"}


def test_dry_run_changes_nothing(history):
    out, _ = replay("--model", "shop.Order", "--all", "--dry-run")
    assert out.count("would replay shop.HistoricalOrder") == 5
    assert "testproject.shop.listeners.on_order_deleted" in out
    assert "dry run: 5 record(s) selected, nothing replayed" in out
    assert not ReceivedEvent.objects.exists()


def test_failures_continue_by_default_and_exit_1(history):
    a, _ = history
    a.status = "explode"
    a.save()
    a.status = "fine"
    a.save()
    with pytest.raises(CommandError, match="1 record") as exc:
        replay("--model", "shop.Order", "--object", str(a.pk))
    assert exc.value.returncode == 1
    assert [e.new["status"] for e in saved_events()] == ["a0", "a1", "a2", "fine"]


def test_stop_on_error(history):
    a, _ = history
    a.status = "explode"
    a.save()
    a.status = "fine"
    a.save()
    with pytest.raises(CommandError):
        replay("--model", "shop.Order", "--object", str(a.pk), "--stop-on-error")
    assert [e.new["status"] for e in saved_events()] == ["a0", "a1", "a2"]


def test_progress_bar_and_verbosity_zero(history):
    customer = CustomerFactory()
    for i in range(120):
        Order.objects.create(customer=customer, status=f"p{i}")
    out, err = replay("--model", "shop.Order", "--type", "+", "--progress")
    assert "121/122" in err or "122/122" in err
    assert "replayed 122" in out
    out, err = replay("--model", "shop.Order", "--type", "+", "--verbosity", "0")
    assert out == "" and err == ""


def test_python_api(history):
    a, _ = history
    seen = []
    result = psh.replay(
        Order, object_ids=[a.pk], on_item=lambda item, outcome: seen.append(outcome)
    )
    assert (result.replayed, result.failed, result.skipped) == (3, 0, 0)
    assert seen == ["replayed"] * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["999999", "--model", "shop.Order"],
            "unknown history id(s) of shop.HistoricalOrder: 999999",
        ),
        (["abc", "--model", "shop.Order"], "malformed history id 'abc'"),
        (["--model", "shop.Nope", "--all"], "unknown model 'shop.Nope'"),
        (["--model", "nonsense", "--all"], "unknown model 'nonsense'"),
        (["--model", "shop.ReceivedEvent", "--all"], "shop.ReceivedEvent has no history"),
        (["--model", "contenttypes.ContentType", "--all"], "ContentType has no history"),
        (
            [
                "--model",
                "shop.Order",
                "--all",
                "--channel",
                "testproject.shop.channels.CustomerChannel",
            ],
            "channel CustomerChannel does not publish shop.Order",
        ),
        (
            ["--model", "shop.Order", "--all", "--channel", "nowhere.Channel"],
            "channel 'nowhere.Channel' not found",
        ),
        (["--model", "shop.Order", "--all", "--listener", "x.y"], "listener x.y is not subscribed"),
        (
            ["--model", "shop.Order", "--since", "yesterday"],
            "--since: 'yesterday' is not an ISO 8601",
        ),
        (
            ["--model", "shop.Order", "--until", "2026-13-45"],
            "--until: '2026-13-45' is not an ISO 8601",
        ),
        (["--model", "shop.Order"], "nothing selected"),
        (["--model", "shop.Order", "--object", "x1"], "malformed object id 'x1'"),
    ],
)
def test_bad_input_is_exit_2_and_runs_nothing(history, args, message):
    with pytest.raises(CommandError) as exc:
        replay(*args)
    assert exc.value.returncode == 2
    assert message in str(exc.value)
    assert not ReceivedEvent.objects.exists()


BAD_INPUTS = [
    (["999999", "--model", "shop.Order"], "unknown history id(s)"),
    (["--model", "shop.Nope", "--all"], "unknown model 'shop.Nope'"),
    (["--model", "shop.ReceivedEvent", "--all"], "shop.ReceivedEvent has no history"),
    (
        [
            "--model",
            "shop.Order",
            "--all",
            "--channel",
            "testproject.shop.channels.CustomerChannel",
        ],
        "does not publish shop.Order",
    ),
    (["--model", "shop.Order", "--since", "yesterday"], "is not an ISO 8601"),
    (["--model", "shop.Order"], "nothing selected"),
    (["--model", "shop.Order", "--type", "?"], "invalid choice: '?'"),
    (["1"], "the following arguments are required: --model"),
]


@pytest.mark.subprocess
@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_in_a_real_subprocess(history, manage, args, message):
    proc = manage("replay_history", *args)
    assert proc.wait(60) == 2
    stderr = proc.stderr_text()
    assert message in stderr
    assert "Traceback" not in stderr
    assert not ReceivedEvent.objects.exists()


@pytest.mark.subprocess
def test_options_in_a_real_subprocess(history, manage):
    a, b_id = history
    first = a.history.order_by("history_date").first()

    proc = manage("replay_history", str(first.pk), "--model", "shop.Order")
    assert proc.wait(60) == 0
    assert "replayed 1, failed 0, skipped 0" in proc.stdout_text()

    proc = manage(
        "replay_history", "--model", "shop.Order", "--object", str(b_id), "--type", "+", "-",
        "--channel", "testproject.shop.channels.OrderChannel", "--listener", ORDER_LISTENER,
        "--since", "2000-01-01", "--until", "2999-12-31",
    )  # fmt: skip
    assert proc.wait(60) == 0
    assert "replayed 1, failed 0, skipped 1" in proc.stdout_text()

    proc = manage("replay_history", "--model", "shop.Order", "--all", "--dry-run")
    assert proc.wait(60) == 0
    assert "dry run: 5 record(s) selected" in proc.stdout_text()

    a.status = "explode"
    a.save()
    a.status = "after"
    a.save()
    proc = manage(
        "replay_history", "--model", "shop.Order", "--object", str(a.pk), "--stop-on-error",
        "--progress",
    )  # fmt: skip
    assert proc.wait(60) == 1
    stdout, stderr = proc.stdout_text(), proc.stderr_text()
    assert "replayed 3, failed 1, skipped 0" in stdout
    assert "1 record(s) failed" in stderr and "4/5" in stderr
    assert "after" not in {e.new["status"] for e in saved_events()}

    proc = manage("replay_history", "--model", "shop.Order", "--all", "--verbosity", "0")
    assert proc.wait(60) == 1
    assert proc.stdout_text() == ""
