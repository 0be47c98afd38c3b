"""Durable subscriptions (issue 17) on real PostgreSQL: where they start, the switch from the
past to live changes under concurrent writers, independent consumers, failures, rewind, pause,
resume, and history removed ahead of a position."""

from __future__ import annotations

import datetime
import signal
import threading
import time
from collections import Counter
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections, transaction

from pgpubsub_simplehistory import HistorySubscription, post_save_listener, subscriptions
from pgpubsub_simplehistory.models import Notification, Position
from testproject.follow.models import Delivered, Entry, HistoricalEntry
from testproject.follow.subscriptions import EntryExport, EntryIndex

from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def follow_all(stream, worker: str = "test") -> int:
    follower = subscriptions.Follower(stream, worker)
    total = 0
    for _ in range(1000):
        followed = follower.follow()
        total += followed.delivered
        if followed.caught_up:
            return total
    raise AssertionError("never caught up")


def delivered(name: str) -> list[int]:
    return list(
        Delivered.objects.filter(subscription=name)
        .order_by("id")
        .values_list("history_id", flat=True)
    )


def history_ids() -> list[int]:
    return sorted(HistoricalEntry.objects.values_list("history_id", flat=True))


def test_a_subscription_delivers_only_its_history_types_and_moves_past_the_others(
    isolated_registry,
):
    kept = Entry.objects.create(title="kept")
    gone = Entry.objects.create(title="gone")
    kept.title = "kept, renamed"
    kept.save()
    gone.delete()
    seen: list[tuple[int, str]] = []
    saves = type(
        "SavesOnly", (HistorySubscription,),
        {"model": Entry, "name": "saves-only", "history_types": "+~", "__module__": __name__},
    )  # fmt: skip
    post_save_listener(saves)(lambda event: seen.append((event.history_id, event.history_type)))
    [stream] = saves.streams()
    follow_all(stream)
    records = HistoricalEntry.objects.order_by("history_id")
    assert seen == [(r.history_id, r.history_type) for r in records if r.history_type != "-"]
    assert len(seen) == 3
    # the delete was not delivered, and the position is past it: nothing is behind
    assert subscriptions.state_of(stream).position == records.last().history_id
    assert subscriptions.state_of(stream).behind == 0


def test_starts_from_the_beginning_a_date_or_a_history_id(isolated_registry):
    old = [Entry.objects.create(title=f"old {i}") for i in range(3)]
    HistoricalEntry.objects.update(
        history_date=datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc)
    )
    recent = [Entry.objects.create(title=f"recent {i}") for i in range(2)]
    ids = history_ids()
    seen: dict[str, list[int]] = {"beginning": [], "date": [], "id": [], "now": []}

    def declare(label: str, start: object) -> type[HistorySubscription]:
        subscription = type(
            f"From{label.title()}", (HistorySubscription,), {"model": Entry, "start": start,
                                                                "name": f"from-{label}",
                                                                "__module__": __name__}
        )  # fmt: skip
        post_save_listener(subscription)(lambda event, _l=label: seen[_l].append(event.history_id))
        return subscription

    streams = {
        "beginning": declare("beginning", "beginning"),
        "date": declare("date", "2025-01-01"),
        "id": declare("id", ids[1]),
        "now": declare("now", "now"),
    }
    for subscription in streams.values():
        follow_all(subscription.streams()[0])
    assert seen["beginning"] == ids
    assert seen["date"] == ids[3:]  # recorded on or after 2025-01-01
    assert seen["id"] == ids[1:]
    assert seen["now"] == []  # only what comes next
    late = Entry.objects.create(title="late")
    follow_all(streams["now"].streams()[0])
    assert seen["now"] == [late.history.get().history_id]
    assert len(old) + len(recent) == 5


def test_the_switch_from_past_to_live_loses_and_repeats_nothing_with_a_transaction_open(manage):
    """200 changes in the past; one transaction numbers a record after them and stays open while
    a worker starts and a writer commits 150 more changes, numbered after it. Nothing at or past
    the open transaction's history id is delivered before it commits. Then every history id is
    delivered to each subscription exactly once, each object's changes in history order.
    (tests/test_subscription_workers.py holds a transaction open while a subscription crosses
    batch boundaries below it.)"""
    entries = [Entry.objects.create(title=f"e{i}") for i in range(40)]
    for round_ in range(4):
        for entry in entries:
            entry.status = f"r{round_}"
            entry.save()
    held_open = threading.Event()
    release = threading.Event()
    held: list[int] = []

    def long_transaction() -> None:
        try:
            with transaction.atomic():
                late = Entry.objects.create(title="held open")  # history id allocated now
                held.append(late.history.get().history_id)
                held_open.set()
                release.wait(20)
                late.status = "committed late"
                late.save()
        finally:
            connections.close_all()

    holder = threading.Thread(target=long_transaction)
    holder.start()
    held_open.wait(10)
    proc = manage("listen", "--sweep-interval", "0.5")

    def writer() -> None:
        try:
            for i in range(150):
                entry = entries[i % len(entries)]
                entry.status = f"live {i}"
                entry.save()
                time.sleep(0.005)
        finally:
            connections.close_all()

    writing = threading.Thread(target=writer)
    writing.start()
    writing.join(60)
    # The worker has been running for as long as the writer wrote, and has delivered nothing at
    # or past the open transaction's id: its horizon stops below an id allocated by a
    # transaction still open. (Here it delivered nothing at all: every reading of the horizon
    # saw that transaction open, since the worker started after it opened.)
    time.sleep(1.0)
    for name in ("entry-index", "entry-export"):
        assert all(i < held[0] for i in delivered(name)), name
        position = Position.objects.filter(subscription=name).first()
        assert position is None or position.position < held[0], name
    release.set()
    holder.join(30)
    every = history_ids()
    for name in ("entry-index", "entry-export"):
        wait_for(lambda n=name: len(delivered(n)) >= len(every), timeout=60)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    for name in ("entry-index", "entry-export"):
        got = delivered(name)
        assert Counter(got) == Counter(every), name  # each once: no gap, no duplicate
        rows = Delivered.objects.filter(subscription=name).order_by("id")
        per_object: dict[int, list[int]] = {}
        for row in rows:
            per_object.setdefault(row.object_id, []).append(row.history_id)
        assert all(ids == sorted(ids) for ids in per_object.values()), name


def test_two_subscriptions_progress_independently_and_a_stopped_one_catches_up(manage):
    for i in range(60):
        Entry.objects.create(title=f"x{i}")
    call_command("subscriptions", "pause", "entry-export", stdout=StringIO())
    proc = manage("listen", "--sweep-interval", "0.5", env={"FOLLOW_EXPORT_SLEEP": "0.01"})
    wait_for(lambda: len(delivered("entry-index")) == 60, timeout=30)
    assert delivered("entry-export") == []  # paused: the other goes on
    out = StringIO()
    call_command("subscriptions", "list", "--json", stdout=out)
    import json

    listed = {row["subscription"]: row for row in json.loads(out.getvalue())}
    assert listed["entry-export"]["state"] == "paused" and listed["entry-export"]["behind"] == 60
    assert listed["entry-index"]["state"] == "live" and listed["entry-index"]["behind"] == 0
    call_command("subscriptions", "resume", "entry-export", stdout=StringIO())
    wait_for(lambda: len(delivered("entry-export")) == 60, timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert delivered("entry-export") == history_ids()


def test_a_failing_change_is_stored_and_parked_per_object_while_the_others_flow(manage):
    bad = Entry.objects.create(title="bad", status="explode")
    bad.status = "after the failure"  # a later change of the same object: waits behind it
    bad.save()
    good = [Entry.objects.create(title=f"good {i}") for i in range(5)]
    proc = manage("listen", "--sweep-interval", "0.3")
    wait_for(lambda: len(delivered("entry-index")) == 5, timeout=30)
    parked = wait_for(
        lambda: Notification.objects.filter(
            state="parked", history_model="follow.HistoricalEntry"
        ).first(),
        timeout=30,
    )
    assert parked.object_id == str(bad.pk) and "index refuses entry" in parked.last_error
    assert parked.attempts == 3
    held = Notification.objects.get(state="pending", object_id=str(bad.pk))
    assert held.history_type == "~"  # held back behind the parked one, in order
    assert sorted(Delivered.objects.filter(subscription="entry-index").values_list(
        "object_id", flat=True)) == sorted(e.pk for e in good)  # fmt: skip
    assert len(delivered("entry-export")) == len(history_ids())  # the other is not affected
    position = Position.objects.get(subscription="entry-index")
    assert position.position == max(history_ids())  # it moved past the failure
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_a_failure_at_commit_or_a_cancelled_statement_is_described_as_on_a_channel(manage):
    """A subscription's failed delivery goes to the queue with the error a channel's would
    have: what failed (the COMMIT, the server), not only the driver's exception."""
    dangling = Entry.objects.create(title="dangling", status="dangling")
    stalled = Entry.objects.create(title="stalled", status="stall")
    fine = Entry.objects.create(title="fine")
    proc = manage("listen", "--sweep-interval", "0.3", env={"FOLLOW_RETRY_BASE_DELAY": "600"})
    wait_for(lambda: Notification.objects.filter(history_model="follow.HistoricalEntry").count()
             == 2, timeout=30)  # fmt: skip
    stored = {n.object_id: n for n in Notification.objects.filter(
        history_model="follow.HistoricalEntry")}  # fmt: skip
    commit = stored[str(dangling.pk)]
    assert commit.last_error.startswith("commit failed: IntegrityError"), commit.last_error
    assert commit.state == "pending" and commit.attempts == 1  # due again in 600 s
    cancelled = stored[str(stalled.pk)]
    assert cancelled.last_error.startswith("statement cancelled by the server:"), (
        cancelled.last_error
    )
    assert "statement_timeout" in cancelled.last_error
    wait_for(lambda: Delivered.objects.filter(subscription="entry-index",
             object_id=fine.pk).exists(), timeout=30)  # fmt: skip
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    stderr = proc.stderr_text()
    assert "commit failed: IntegrityError" in stderr and "statement cancelled" in stderr


def test_rewind_delivers_again_from_an_id_or_a_date():
    entries = [Entry.objects.create(title=f"r{i}") for i in range(4)]
    stream = EntryIndex.streams()[0]
    follow_all(stream)
    ids = history_ids()
    assert delivered("entry-index") == ids
    out = StringIO()
    call_command("subscriptions", "rewind", "entry-index", "--to", str(ids[2]), stdout=out)
    assert f"position {ids[2] - 1}" in out.getvalue()
    follow_all(stream)
    assert delivered("entry-index") == ids + ids[2:]
    call_command("subscriptions", "rewind", "entry-index", "--to", "beginning", stdout=StringIO())
    follow_all(stream)
    assert delivered("entry-index") == ids + ids[2:] + ids
    with pytest.raises(CommandError, match="no subscription named 'nope'") as exc:
        call_command("subscriptions", "rewind", "nope", "--to", "1", stdout=StringIO())
    assert exc.value.returncode == 2
    with pytest.raises(CommandError, match="--to") as exc:
        call_command("subscriptions", "rewind", "entry-index", "--to", "soon", stdout=StringIO())
    assert exc.value.returncode == 2
    assert len(entries) == 4


def test_history_deleted_above_the_position_stops_the_subscription_and_says_so():
    stream = EntryIndex.streams()[0]
    Entry.objects.create(title="delivered first")
    follow_all(stream)
    position = Position.objects.get(subscription="entry-index").position
    Entry.objects.create(title="removed before delivery")
    Entry.objects.create(title="kept")
    # A cleanup below the position is harmless; above it, before delivery, it is a loss.
    HistoricalEntry.objects.filter(history_id__lte=position).delete()
    assert Position.objects.get(subscription="entry-index").removed_ahead == 0
    removed = HistoricalEntry.objects.filter(title="removed before delivery")
    removed_id = removed.get().history_id
    removed.delete()
    before = delivered("entry-index")
    follow_all(stream)
    assert delivered("entry-index") == before  # stopped: nothing delivered past the hole
    row = Position.objects.get(subscription="entry-index")
    assert "1 history record(s)" in row.stopped and "resume --accept-loss" in row.stopped
    out = StringIO()
    call_command("subscriptions", "list", stdout=out)
    assert "stopped" in out.getvalue()
    with pytest.raises(CommandError, match="stays stopped"):
        call_command("subscriptions", "resume", "entry-index", stdout=StringIO())
    call_command("subscriptions", "resume", "entry-index", "--accept-loss", stdout=StringIO())
    follow_all(stream)
    kept = HistoricalEntry.objects.get(title="kept").history_id
    assert delivered("entry-index")[-1] == kept and removed_id not in delivered("entry-index")


def test_a_worker_that_dies_in_a_listener_parks_that_record_after_max_attempts(manage):
    crash = Entry.objects.create(title="kills its worker", status="crash")
    fine = Entry.objects.create(title="fine")
    env = {"FOLLOW_CRASH": "1", "PSH_LEASE_SECONDS": "1"}
    started = time.monotonic()
    crashes = 0

    def parked_it() -> bool:
        return Notification.objects.filter(object_id=str(crash.pk), state="parked").exists()

    for _ in range(8):  # restart the worker while it dies, as a supervisor would
        proc = manage("listen", "--sweep-interval", "0.3", env=env)
        wait_for(lambda p=proc: p.poll() is not None or parked_it(), timeout=30)
        if proc.poll() is None:
            break  # it parked the record instead of dying again
        crashes += 1
        time.sleep(1.1)  # the lease runs out
    assert parked_it() and crashes == EntryIndex.max_attempts
    wait_for(lambda: fine.pk in Delivered.objects.filter(subscription="entry-index")
             .values_list("object_id", flat=True), timeout=30)  # fmt: skip
    parked = Notification.objects.get(
        object_id=str(crash.pk), history_model="follow.HistoricalEntry"
    )
    assert parked.state == "parked" and "ended without settling it" in parked.last_error
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert time.monotonic() - started < 60


def test_listener_health_thresholds_per_subscription():
    for i in range(3):
        Entry.objects.create(title=f"h{i}")
    out = StringIO()
    call_command("listener_health", "--max-lag-records", "3", stdout=out)
    assert (
        "subscription entry-index [follow.Entry]: catching up, 3 records behind" in out.getvalue()
    )
    with pytest.raises(CommandError, match=r"entry-index \[follow.Entry\]: 3 records behind > 2"):
        call_command("listener_health", "--max-lag-records", "2", stdout=StringIO())
    with pytest.raises(CommandError, match="behind > 0s"):
        call_command("listener_health", "--max-lag-seconds", "0", stdout=StringIO())
    follow_all(EntryIndex.streams()[0])
    follow_all(EntryExport.streams()[0])
    call_command("listener_health", "--max-lag-records", "0", stdout=StringIO())


def test_watch_shows_progress_and_rate_until_live_and_list_and_dashboard_show_them(
    manage, admin_client
):
    import json

    for i in range(40):
        Entry.objects.create(title=f"w{i}")
    call_command("subscriptions", "pause", "entry-export", stdout=StringIO())
    watched = manage("subscriptions", "watch", "entry-index", "--interval", "0.1",
                     "--timeout", "60")  # fmt: skip
    time.sleep(1.0)
    assert watched.poll() is None  # nothing moves it yet: it keeps watching
    proc = manage("listen", "--sweep-interval", "0.5", env={"FOLLOW_EXPORT_SLEEP": "0.01"})
    assert watched.wait(60) == 0, watched.stderr_text()
    assert "entry-index [follow.Entry]: live at position" in watched.out_path.read_text()
    lines = watched.stderr_text().splitlines()  # not a terminal: a plain line now and then
    assert lines[0].startswith("0/40 records") and lines[-1].startswith("40/40 records")
    assert all("records/s" in line for line in lines)

    out = StringIO()
    call_command("subscriptions", "list", "--json", stdout=out)
    listed = {row["subscription"]: row for row in json.loads(out.getvalue())}
    assert listed["entry-index"]["rate"] > 0  # it just moved: its worker's rate
    assert listed["entry-export"]["rate"] == 0.0 and listed["entry-export"]["eta_seconds"] is None
    out = StringIO()
    call_command("subscriptions", "list", stdout=out)
    assert "rate/s" in out.getvalue() and "eta" in out.getvalue()

    page = admin_client.get("/admin/pgpubsub_simplehistory/notification/dashboard/")
    html = page.content.decode()
    assert 'id="psh-subscriptions"' in html
    rows = {s.subscription: s for s in page.context["dashboard"].subscriptions}
    assert rows["entry-export"].state == "paused" and rows["entry-export"].behind == 40
    assert rows["entry-index"].state == "live"

    # a paused subscription: watch says so and exits 1
    err = StringIO()
    with pytest.raises(CommandError, match=r"entry-export \[follow.Entry\] is paused"):
        call_command("subscriptions", "watch", "entry-export", "--interval", "0.1", stderr=err)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_listener_health_checks_only_the_subscriptions_named():
    for i in range(3):
        Entry.objects.create(title=f"n{i}")
    follow_all(EntryIndex.streams()[0])  # entry-index is live, entry-export 3 behind
    call_command("listener_health", "--subscription", "entry-index", "--max-lag-records", "0",
                 stdout=StringIO())  # fmt: skip
    with pytest.raises(CommandError, match="entry-export"):
        call_command("listener_health", "--subscription", "entry-export",
                     "--max-lag-records", "0", stdout=StringIO())  # fmt: skip
    with pytest.raises(CommandError, match="no subscription named 'nope'") as raised:
        call_command("listener_health", "--subscription", "nope", stdout=StringIO())
    assert raised.value.returncode == 2
