"""Durable subscriptions served by a real ``manage.py listen`` process (issue 17): start points
and rewinds, django-simple-history's cleanup commands removing records ahead of a position,
and positions under concurrent bulk writers and m2m changes with a transaction held open
across a batch boundary.

``tests/test_subscriptions.py`` covers the same ground with an in-process ``Follower`` where it
can; here every delivery is made by the worker process, and every operator command is a
``manage.py`` process too. ``FOLLOW_STARTS`` declares extra subscriptions in the processes
given it (``testproject/follow/subscriptions.py``)."""

from __future__ import annotations

import datetime
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections, transaction
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from pgpubsub_simplehistory.models import Position
from testproject.follow.models import Delivered, Entry, HistoricalEntry, Label

from .conftest import Proc, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]

SUBSCRIPTIONS = ("entry-index", "entry-export")


def delivered(name: str) -> list[int]:
    return list(
        Delivered.objects.filter(subscription=name)
        .order_by("id")
        .values_list("history_id", flat=True)
    )


def history_ids(**filters: Any) -> list[int]:
    return sorted(HistoricalEntry.objects.filter(**filters).values_list("history_id", flat=True))


def position(name: str) -> Position:
    return Position.objects.get(subscription=name, history_model="follow.HistoricalEntry")


def finished(proc: Proc, timeout: float = 60) -> tuple[int, str]:
    """Wait for a ``manage.py`` command; its exit code and its output (both streams)."""
    code = proc.wait(timeout)
    return code, proc.stdout_text() + proc.stderr_text()


def stop(proc: Proc) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stderr_text()
    assert "Traceback" not in proc.stderr_text(), proc.stderr_text()
    return proc.stderr_text()


def test_start_points_and_rewinds_under_a_running_worker(manage: Callable[..., Proc]) -> None:
    """Subscriptions starting at the beginning, a date, a history id and "now" are served by
    one ``manage.py listen``; ``manage.py subscriptions rewind`` to an id, a date and the
    beginning, run while that worker is live, makes it deliver again from there, once."""
    for i in range(3):
        Entry.objects.create(title=f"old {i}")
    HistoricalEntry.objects.update(
        history_date=datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc)
    )
    for i in range(2):
        Entry.objects.create(title=f"recent {i}")
    ids = history_ids()
    assert len(ids) == 5
    env = {"FOLLOW_STARTS": f"date=2025-01-01,id={ids[1]},now=now"}
    worker = manage("listen", "--sweep-interval", "0.5", env=env)

    expected = {
        "entry-index": ids,  # "beginning"
        "from-date": ids[3:],  # recorded on or after 2025-01-01
        "from-id": ids[1:],  # that record first
        "from-now": [],  # only what comes next
    }
    wait_for(lambda: Position.objects.filter(subscription="from-now").exists(), timeout=60)
    for name, ids_from in expected.items():
        wait_for(lambda n=name, e=ids_from: delivered(n) == e, timeout=60)
    # "now" is where the history ended when the worker made its position
    assert position("from-now").position == ids[-1]
    late = Entry.objects.create(title="late")
    late_id = late.history.get().history_id
    for name in expected:
        expected[name] = [*expected[name], late_id]
        wait_for(lambda n=name: delivered(n) == expected[n], timeout=30)
    assert delivered("from-now") == [late_id]

    rewinds = [
        ("from-id", str(ids[2]), ids[2] - 1, ids[2:]),  # a history id: that record next
        ("entry-index", "2025-01-01", ids[3] - 1, ids[3:]),  # the first on or after a date
        ("from-date", "beginning", 0, ids),
    ]
    for name, to, at, again in rewinds:
        rewind = manage("subscriptions", "rewind", name, "--to", to, env=env)
        code, output = finished(rewind)
        assert code == 0, output
        assert f"{name}[follow.Entry]: rewound" in output and f"(position {at})" in output
        expected[name] = [*expected[name], *again, late_id]
        wait_for(lambda n=name: delivered(n) == expected[n], timeout=30)
    time.sleep(0.5)  # nothing more arrives: each record once per rewind
    for name, ids_delivered in expected.items():
        assert delivered(name) == ids_delivered, name
        assert position(name).position == late_id, name
    stop(worker)


def age(history_ids: list[int], days: int = 90) -> None:
    """Make these records ``days`` old (as if recorded then)."""
    then = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)
    HistoricalEntry.objects.filter(history_id__in=history_ids).update(history_date=then)


def test_clean_old_history_above_a_position_stops_that_subscription_until_loss_is_accepted(
    manage: Callable[..., Proc],
) -> None:
    """``manage.py clean_old_history`` removes two records below both positions (harmless) and
    three that entry-export has delivered but the paused entry-index has not: entry-index stops
    when it is resumed, says how many records it lost and how to go on, and delivers nothing
    until ``subscriptions resume --accept-loss``; entry-export goes on throughout."""
    for i in range(4):
        Entry.objects.create(title=f"early {i}")
    worker = manage("listen", "--sweep-interval", "0.5")
    early = history_ids()
    for name in SUBSCRIPTIONS:
        wait_for(lambda n=name: delivered(n) == early, timeout=60)
    code, output = finished(manage("subscriptions", "pause", "entry-index"))
    assert code == 0, output
    for i in range(3):
        Entry.objects.create(title=f"aged {i}")
    for i in range(2):
        Entry.objects.create(title=f"fresh {i}")
    aged = history_ids(title__startswith="aged")
    fresh = history_ids(title__startswith="fresh")
    wait_for(lambda: delivered("entry-export") == early + aged + fresh, timeout=30)
    assert delivered("entry-index") == early and position("entry-index").position == early[-1]

    age(early[:2] + aged)
    code, output = finished(manage("clean_old_history", "--auto", "--days", "30"))
    assert code == 0, output
    assert "Removed 5 historical records for" in output, output
    assert history_ids() == early[2:] + fresh
    assert position("entry-index").removed_ahead == 3  # the aged ones, above its position
    assert position("entry-export").removed_ahead == 0  # all below its position

    code, output = finished(manage("subscriptions", "resume", "entry-index"))
    assert code == 0, output  # not stopped yet: its worker finds out at its next claim
    stopped = wait_for(lambda: position("entry-index").stopped, timeout=30)
    assert stopped.startswith(
        f"3 history record(s) of follow.HistoricalEntry above position {early[-1]} were deleted"
    ), stopped
    assert "`manage.py subscriptions resume --accept-loss` goes on without them" in stopped
    wait_for(lambda: "entry-index[follow.Entry] stopped: 3 history record(s)" in (
        worker.stderr_text()), timeout=10)  # fmt: skip

    after = Entry.objects.create(title="after the cleanup")
    after_id = after.history.get().history_id
    wait_for(lambda: delivered("entry-export")[-1:] == [after_id], timeout=30)
    time.sleep(0.5)
    assert delivered("entry-index") == early  # nothing past the hole

    listed = manage("subscriptions", "list", "--json")
    code, _ = finished(listed)
    assert code == 0, listed.stderr_text()
    rows = {row["subscription"]: row for row in json.loads(listed.stdout_text())}
    assert rows["entry-index"]["state"] == "stopped" and rows["entry-index"]["stopped"] == stopped
    assert rows["entry-export"]["state"] == "live"
    code, output = finished(manage("listener_health", "--max-lag-seconds", "3600"))
    assert code == 1, output
    assert "entry-index [follow.Entry]: stopped: 3 history record(s)" in output, output
    code, output = finished(manage("subscriptions", "resume", "entry-index"))
    assert code == 2 and "stays stopped: 3 history record(s)" in output, output
    assert "Traceback" not in output

    code, output = finished(manage("subscriptions", "resume", "entry-index", "--accept-loss"))
    assert code == 0, output
    wait_for(lambda: delivered("entry-index") == early + fresh + [after_id], timeout=30)
    assert position("entry-index").stopped == "" and position("entry-index").removed_ahead == 0
    code, output = finished(manage("listener_health", "--max-lag-seconds", "3600"))
    assert code == 0, output
    assert delivered("entry-export") == early + aged + fresh + [after_id]
    stop(worker)


def test_clean_duplicate_history_ahead_of_a_position_is_reported_the_same_way(
    manage: Callable[..., Proc],
) -> None:
    """``manage.py clean_duplicate_history`` deletes the records that repeat their predecessor:
    a duplicate below entry-index's position costs nothing, two ahead of it stop it."""
    kept = Entry.objects.create(title="kept")
    kept.save()  # a duplicate, below the position once delivered
    worker = manage("listen", "--sweep-interval", "0.5")
    before = history_ids()
    wait_for(lambda: delivered("entry-index") == before, timeout=60)
    code, output = finished(manage("subscriptions", "pause", "entry-index"))
    assert code == 0, output
    kept.status = "changed"
    kept.save()
    kept.save()  # a duplicate, ahead of the position
    other = Entry.objects.create(title="other")
    other.save()  # a duplicate, ahead of the position
    wait_for(lambda: len(delivered("entry-export")) == len(history_ids()), timeout=30)
    duplicates = [before[1], *history_ids(history_type="~", id=kept.pk)[-1:]]
    duplicates.append(history_ids(id=other.pk)[-1])

    code, output = finished(manage("clean_duplicate_history", "follow.Entry"))
    assert code == 0, output
    remaining = history_ids()
    assert not set(duplicates) & set(remaining) and len(remaining) == 3, remaining
    assert position("entry-index").removed_ahead == 2
    code, output = finished(manage("subscriptions", "resume", "entry-index"))
    assert code == 0, output
    stopped = wait_for(lambda: position("entry-index").stopped, timeout=30)
    assert stopped.startswith("2 history record(s) of follow.HistoricalEntry above position")
    assert delivered("entry-index") == before
    code, output = finished(manage("subscriptions", "resume", "entry-index", "--accept-loss"))
    assert code == 0, output
    wait_for(lambda: delivered("entry-index") == before + remaining[1:], timeout=30)
    stop(worker)


class Writers:
    """Threads that write Entry history until told to stop, each on objects of its own (no
    deadlock between them): bulk creates, bulk updates, and m2m changes."""

    def __init__(self, updated: list[Entry], tagged: list[Entry], labels: list[Label]) -> None:
        self.updated = updated
        self.tagged = tagged
        self.labels = labels
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.transactions = Counter[str]()
        self.threads = [
            threading.Thread(target=self._run, args=(job,), name=job.__name__)
            for job in (self.bulk_create, self.bulk_update, self.m2m)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self, job: Callable[[int], None]) -> None:
        try:
            n = 0
            while not self.stopping.is_set():
                job(n)
                self.transactions[job.__name__] += 1
                n += 1
                time.sleep(0.05)
        except BaseException as exc:  # asserted by the test
            self.errors.append(exc)
        finally:
            connections.close_all()

    def bulk_create(self, n: int) -> None:
        bulk_create_with_history([Entry(title=f"bulk {n}.{i}") for i in range(8)], Entry)

    def bulk_update(self, n: int) -> None:
        for entry in self.updated:
            entry.status = f"u{n:05d}"
        bulk_update_with_history(self.updated, Entry, ["status"])

    def m2m(self, n: int) -> None:
        entry = self.tagged[n % len(self.tagged)]
        label = self.labels[n % len(self.labels)]
        if n % 2:
            entry.tags.remove(label)
        else:
            entry.tags.add(label)


class Holder(threading.Thread):
    """A transaction that changes ``entry`` (numbering a history record), stays open until
    :meth:`commit`, then changes it again and adds a tag (two records numbered at its end)."""

    def __init__(self, entry: Entry, label: Label) -> None:
        super().__init__(name="holder")
        self.entry = entry
        self.label = label
        self.opened, self.release, self.done = (threading.Event() for _ in range(3))
        self.history_id = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            with transaction.atomic():
                self.entry.status = "held 1"
                self.entry.save()
                self.history_id = self.entry.history.latest("history_id").history_id
                self.opened.set()
                self.release.wait(120)
                self.entry.status = "held 2"
                self.entry.save()
                self.entry.tags.add(self.label)
        except BaseException as exc:  # reported by commit()
            self.errors.append(exc)
        finally:
            self.done.set()
            connections.close_all()

    def commit(self) -> None:
        self.release.set()
        self.join(60)
        assert self.done.is_set() and not self.errors, self.errors


def test_positions_under_concurrent_bulk_and_m2m_writers_with_a_transaction_held_open(
    manage: Callable[..., Proc],
) -> None:
    """While a worker follows, three threads commit ``bulk_create_with_history``,
    ``bulk_update_with_history`` and m2m changes, and one transaction numbers a record and stays
    open. entry-export (paused until then) catches up across several batches of 50 while it is
    open; neither subscription moves to or past its history id until it commits, though records
    numbered after it commit meanwhile. At the end every history id has been delivered to each
    subscription exactly once, in history id order, and each object's changes in the order
    they were made."""
    labels = [Label.objects.create(name=f"l{i}") for i in range(4)]
    updated = [Entry.objects.create(title=f"updated {i}") for i in range(10)]
    tagged = [Entry.objects.create(title=f"tagged {i}") for i in range(6)]
    held_entry = Entry.objects.create(title="held")
    code, output = finished(manage("subscriptions", "pause", "entry-export"))
    assert code == 0, output
    worker = manage("listen", "--sweep-interval", "0.5", env={"FOLLOW_EXPORT_SLEEP": "0.002"})
    writers = Writers(updated, tagged, labels)
    holder = Holder(held_entry, labels[0])
    writers.start()
    try:
        # entry-index follows live; entry-export is paused, its backlog growing
        wait_for(lambda: len(delivered("entry-index")) >= 200, timeout=60)
        holder.start()
        assert holder.opened.wait(30)
        held = holder.history_id
        code, output = finished(manage("subscriptions", "resume", "entry-export"))
        assert code == 0, output
        # entry-export crosses batch boundaries (50 records each) while the transaction is open
        wait_for(lambda: position("entry-export").position > 2 * 50, timeout=60)
        # records numbered after the held one commit meanwhile
        wait_for(lambda: len(history_ids(history_id__gt=held)) >= 150, timeout=60)

        def below_and_settled() -> bool:  # until neither position moved for a second
            first = {name: position(name).position for name in SUBSCRIPTIONS}
            for name, at in first.items():  # the horizon stays below the open transaction
                assert at < held, (name, at, held)
                assert all(i < held for i in delivered(name)), name
            time.sleep(1.0)
            return {name: position(name).position for name in SUBSCRIPTIONS} == first

        wait_for(below_and_settled, timeout=60, interval=0)
        assert not holder.done.is_set()  # still open
        assert len(delivered("entry-export")) > 2 * 50

        holder.commit()
        time.sleep(1.0)  # more concurrent writes after it committed
    finally:  # never leave a thread writing (or a transaction open) behind a failure
        holder.release.set()
        writers.stop()
        if holder.ident is not None:
            holder.join(60)
    assert not writers.errors, writers.errors
    every = history_ids()
    for name in SUBSCRIPTIONS:
        wait_for(lambda n=name: len(delivered(n)) >= len(every), timeout=90)
    time.sleep(0.5)
    stop(worker)

    assert writers.transactions["bulk_create"] > 3 and writers.transactions["m2m"] > 3
    assert writers.transactions["bulk_update"] > 3
    kinds = Counter(HistoricalEntry.objects.values_list("history_type", flat=True))
    assert kinds["+"] > 24 and kinds["~"] > 40, kinds
    held_records = history_ids(id=held_entry.pk, history_id__gte=held)
    assert len(held_records) == 3 and held_records[1] > held + 150  # numbered at its commit
    for name in SUBSCRIPTIONS:
        got = delivered(name)
        assert Counter(got) == Counter(every), name  # each once: no gap, no duplicate
        assert got == every, name  # in history id order
        per_object: dict[int, list[tuple[int, str]]] = {}
        for row in Delivered.objects.filter(subscription=name).order_by("id"):
            per_object.setdefault(row.object_id, []).append((row.history_id, row.status))
        for object_id, changes in per_object.items():
            assert [h for h, _ in changes] == sorted(h for h, _ in changes), (name, object_id)
        for entry in updated:  # the bulk updates, in the order they were made
            statuses = [s for _, s in per_object[entry.pk]]
            assert statuses[0] == "draft" and statuses[1:] == sorted(statuses[1:]), statuses
            assert len(statuses) == writers.transactions["bulk_update"] + 1
        assert [s for _, s in per_object[held_entry.pk]] == ["draft", "held 1", "held 2", "held 2"]
