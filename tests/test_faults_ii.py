"""Fault tests II (issue 14): every failure is an attempt, the worker never wedges, a slow
callback holds no other object, the supervisor keeps its workers, per-object order holds
whatever the writers do.

Real ``manage.py listen`` subprocesses (or, for the concurrent writers, a real in-process worker
beside writer threads with connections of their own) on real Postgres; each test bounded in time.
The listener hooks are data-driven (testproject/shop/listeners.py): an order's status
``"dangling"`` fails at COMMIT, ``"slow"`` sleeps, ``"crash"`` kills its worker with SIGKILL; each
appends ``<pid> <history_id>`` to a marker file per run, so that the runs of a callback are counted
even when their transaction rolled back.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
import pytest
from django.db import connection, connections, transaction

from pgpubsub_simplehistory.models import Notification
from testproject.configs.models import Article, Tag
from testproject.pgembed import fresh_database
from testproject.shop.factories import CustomerFactory, OrderFactory
from testproject.shop.models import Order, ReceivedEvent, Shipment

from .conftest import Proc, subprocess_database_url
from .test_faults import stop, wait_ready, write_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]

#: Fast retries for the worker subprocesses (testproject/shop/channels.py reads them).
FAST_RETRIES = {
    "SHOP_MAX_ATTEMPTS": "3",
    "SHOP_RETRY_BASE_DELAY": "0.2",
    "SHOP_RETRY_MAX_DELAY": "0.4",
}


# -- helpers --------------------------------------------------------------------------------------


def expect(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    explain: Callable[[], str] = lambda: "",
    interval: float = 0.1,
) -> Any:
    """Wait for ``predicate()``; on timeout fail with ``what`` and the state ``explain()`` gives."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s. {explain()}")
        time.sleep(interval)


def queue_state(limit: int = 8) -> str:
    wanted = ("id", "object_id", "state", "attempts", "leased_by", "leased_until", "last_error")
    present = {f.name for f in Notification._meta.concrete_fields}
    rows = Notification.objects.order_by("pk").values(*(f for f in wanted if f in present))[:limit]
    shown = [{**r, "last_error": r["last_error"][:160]} for r in rows]
    return f"queue ({Notification.objects.count()} rows): {shown}"


def tail(proc: Proc, chars: int = 2500) -> str:
    """The end of a worker's stderr, without its "listening on <channel>" lines."""
    lines = [line for line in proc.stderr_text().splitlines() if " listening on " not in line]
    text = "\n".join(lines)[-chars:]
    return f"worker {proc.pid} (exit {proc.poll()}) stderr tail:\n{text}"


def deliveries(orders: Iterable[Order]) -> dict[int, int]:
    """Committed deliveries to on_order_saved (ReceivedEvent rows) per order."""
    orders = list(orders)
    counts = Counter(
        ReceivedEvent.objects.filter(
            listener="on_order_saved", object_id__in=[str(o.pk) for o in orders]
        ).values_list("object_id", flat=True)
    )
    return {o.pk: counts[str(o.pk)] for o in orders}


def all_once(orders: Iterable[Order]) -> bool:
    return set(deliveries(orders).values()) == {1}


def history_id(order: Order) -> str:
    return str(order.history.get().pk)


def marker_runs(marker: Path) -> list[str]:
    """One line per run of a hooked callback: ``<pid> <history_id>``."""
    return marker.read_text().splitlines() if marker.exists() else []


_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def log_records(stderr: str) -> list[str]:
    """The worker's log records (a record with a traceback spans several lines)."""
    records: list[str] = []
    for line in stderr.splitlines():
        if _RECORD_START.match(line) or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


def processed_lines(stderr: str, history_id: str) -> list[str]:
    """The "processed" log lines of one history record of OrderChannel."""
    pattern = re.compile(rf"\bprocessed\b.*\bhistory_id={re.escape(history_id)}\b")
    return [r for r in log_records(stderr) if pattern.search(r.splitlines()[0])]


def with_query(url: str, **params: str) -> str:
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return url + ("&" if "?" in url else "?") + query


def children(pid: int) -> set[int]:
    """The child processes of ``pid`` (zombies included), from /proc."""
    found: set[int] = set()
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(p) for p in path.read_text().split())
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- 2: a failure at COMMIT -----------------------------------------------------------------------


def test_2_failure_at_commit_is_an_attempt_isolated_retried_and_parked(manage, tmp_path):
    customer = CustomerFactory(name="commit")
    fine = [Order.objects.create(customer=customer, status=f"fine{i}") for i in range(5)]
    dangling = Order.objects.create(customer=customer, status="dangling")
    fine += [Order.objects.create(customer=customer, status=f"fine{i}") for i in range(5, 10)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f' "
            "AND conrelid = 'shop_shipment'::regclass AND confrelid = 'shop_order'::regclass"
        )
        (constraint,) = (row[0] for row in cursor.fetchall())
    marker = tmp_path / "dangling-runs"
    env = {**FAST_RETRIES, "SHOP_DANGLING_MARKER": str(marker)}
    started = time.monotonic()
    proc = manage("listen", "--sweep-interval", "0.2", "--loglevel", "debug", env=env)

    def explain() -> str:
        return f"{queue_state()}; deliveries {deliveries(fine)}; {tail(proc)}"

    expect(
        lambda: (
            Notification.objects.filter(object_id=str(dangling.pk), state="parked").exists()
            and all_once(fine)
        ),
        timeout=30,
        what="the dangling order parked and the 10 fine ones processed",
        explain=explain,
    )
    parked_after = time.monotonic() - started
    time.sleep(1.0)  # a worker that went on trying would try again within this second
    assert proc.poll() is None, tail(proc)
    stderr = proc.stderr_text()
    assert stop(proc) == 0, tail(proc)

    parked = Notification.objects.get()
    assert (parked.object_id, parked.state, parked.attempts) == (str(dangling.pk), "parked", 3)
    assert parked.last_error.startswith("commit failed:"), parked.last_error
    assert constraint in parked.last_error, parked.last_error
    # Its own writes never committed: neither its ReceivedEvent nor the shipment.
    assert deliveries([dangling]) == {dangling.pk: 0}
    assert not Shipment.objects.filter(carrier="dangling").exists()
    assert deliveries(fine) == {o.pk: 1 for o in fine}
    # Bounded tries: one failure logged per attempt, the callback run at most twice per attempt
    # (once in its batch, once alone), never logged as processed.
    failures = [r for r in log_records(stderr) if "commit failed" in r]
    assert len(failures) == 3, "\n".join(failures) or stderr[-3000:]
    runs = marker_runs(marker)
    assert 3 <= len(runs) <= 6, runs
    assert processed_lines(stderr, history_id(dangling)) == []
    assert all(len(processed_lines(stderr, history_id(o))) == 1 for o in fine), stderr[-3000:]
    write_record(
        "failure at COMMIT (deferred FK)",
        {"sent": 11, "lost": 0, "duplicated": 0, "parked": 1, "runs": len(runs),
         "parked_after_s": round(parked_after, 1)},
    )  # fmt: skip


# -- 3: the server ends the session ---------------------------------------------------------------


def test_3_session_ended_by_idle_in_transaction_timeout_is_an_attempt_and_parked(manage, tmp_path):
    customer = CustomerFactory(name="idle-timeout")
    innocent = [Order.objects.create(customer=customer, status=f"innocent{i}") for i in range(3)]
    slow = Order.objects.create(customer=customer, status="slow")
    innocent += [Order.objects.create(customer=customer, status=f"innocent{i}") for i in (3, 4, 5)]
    marker = tmp_path / "slow-runs"
    # Only the worker's sessions get the setting: 0.5 s idle in a transaction ends the session,
    # the slow callback sleeps 1.5 s inside its transaction.
    url = with_query(
        subprocess_database_url(), options="-c idle_in_transaction_session_timeout=500"
    )
    env = {**FAST_RETRIES, "SHOP_SLOW_MARKER": str(marker), "SHOP_SLOW_SECONDS": "1.5"}
    started = time.monotonic()
    proc = manage("listen", "--sweep-interval", "0.2", env=env, url=url)

    def explain() -> str:
        return (
            f"{queue_state()}; innocent deliveries {deliveries(innocent)}; slow callback runs "
            f"{len(marker_runs(marker))}; {tail(proc)}"
        )

    expect(
        lambda: (
            Notification.objects.filter(object_id=str(slow.pk), state="parked").exists()
            and all_once(innocent)
        ),
        timeout=40,
        what="the slow order parked and the 6 innocent ones processed",
        explain=explain,
    )
    parked_after = time.monotonic() - started
    time.sleep(1.0)
    assert proc.poll() is None, tail(proc)
    assert stop(proc) == 0, tail(proc)

    parked = Notification.objects.get()
    assert (parked.object_id, parked.state, parked.attempts) == (str(slow.pk), "parked", 3)
    assert "session terminated by the server" in parked.last_error, parked.last_error
    # ... naming the cause: the setting, or the server's message ("terminating connection due to
    # idle-in-transaction timeout"; psycopg2 reports only "server closed the connection
    # unexpectedly", so the worker has to name the setting itself).
    assert re.search(r"idle_in_transaction_session_timeout|idle-in-transaction", parked.last_error)
    assert deliveries(innocent) == {o.pk: 1 for o in innocent}
    assert deliveries([slow]) == {slow.pk: 0}
    # The slow callback's own write was in the ended session: never committed.
    assert not ReceivedEvent.objects.filter(listener="on_order_saved:slow").exists()
    runs = marker_runs(marker)
    assert len(runs) == 3, runs  # one run per attempt, no more
    write_record(
        "session ended by idle_in_transaction_session_timeout",
        {"sent": 7, "lost": 0, "duplicated": 0, "parked": 1, "runs": len(runs),
         "parked_after_s": round(parked_after, 1)},
    )  # fmt: skip


# -- 4: kill -9 mid-callback, repeated until parked -----------------------------------------------


def test_4_a_callback_that_kills_its_worker_is_parked_after_max_attempts_crashes(manage, tmp_path):
    customer = CustomerFactory(name="crash")
    crash = Order.objects.create(customer=customer, status="crash")
    # Claimed in the same batch as the crashing one by every worker until it is parked.
    beside = Order.objects.create(customer=customer, status="beside")
    marker = tmp_path / "crash-runs"
    env = {**FAST_RETRIES, "PSH_LEASE_SECONDS": "2", "SHOP_CRASH_MARKER": str(marker)}
    workers: list[Proc] = []
    meanwhile: Order | None = None
    started = time.monotonic()
    deadline = started + 75

    def crashes() -> int:
        return sum(1 for w in workers if w.poll() == -signal.SIGKILL)

    def is_parked() -> bool:
        return Notification.objects.filter(object_id=str(crash.pk), state="parked").exists()

    def explain() -> str:
        codes = [w.poll() for w in workers]
        last = tail(workers[-1]) if workers else ""
        return f"worker exits {codes}; callback runs {marker_runs(marker)}; {queue_state()}; {last}"

    # Restart the worker whenever it dies, as a process manager would; bounded in starts and time.
    while not is_parked():
        if time.monotonic() > deadline or len(workers) > 6:
            raise AssertionError(f"not parked after {crashes()} crashes. {explain()}")
        if not workers or workers[-1].poll() is not None:
            workers.append(manage("listen", "--sweep-interval", "0.2", env=env))
        if meanwhile is None and crashes() >= 1:
            meanwhile = Order.objects.create(customer=customer, status="meanwhile")
        time.sleep(0.1)
    parked_after = time.monotonic() - started
    assert meanwhile is not None
    expect(
        lambda: all_once([beside, meanwhile]),
        timeout=15,
        what="the orders beside the crashing one processed",
        explain=lambda: f"deliveries {deliveries([beside, meanwhile])}; {explain()}",
    )
    last = workers[-1]
    assert last.poll() is None, explain()
    assert stop(last) == 0, tail(last)

    assert crashes() == 3 and len(workers) == 4, explain()
    runs = marker_runs(marker)
    assert len(runs) == 3 and all(r.endswith(f" {history_id(crash)}") for r in runs), runs
    parked = Notification.objects.get()
    assert (parked.object_id, parked.state, parked.attempts) == (str(crash.pk), "parked", 3)
    assert re.search(r"died|ended", parked.last_error), parked.last_error
    assert deliveries([crash, beside, meanwhile]) == {crash.pk: 0, beside.pk: 1, meanwhile.pk: 1}
    print(f"parked after 3 crashes in {parked_after:.1f} s")
    write_record(
        "kill -9 mid-callback repeated until parked",
        {"sent": 3, "lost": 0, "duplicated": 0, "parked": 1, "faults": crashes(),
         "parked_after_s": round(parked_after, 1)},
    )  # fmt: skip


# -- 9: a slow callback beside an idle second worker ----------------------------------------------


def test_9_a_slow_callback_does_not_hold_other_objects_from_an_idle_worker(manage, tmp_path):
    customer = CustomerFactory(name="slow-beside")
    with transaction.atomic():
        slow = Order.objects.create(customer=customer, status="slow")
        fine = [Order.objects.create(customer=customer, status=f"fine{i}") for i in range(30)]
    marker = tmp_path / "slow-runs"
    env = {"PSH_RELEASE_AFTER": "0.5", "SHOP_SLOW_SECONDS": "6", "SHOP_SLOW_MARKER": str(marker)}
    # The first worker alone claims the 31 notifications in one batch; the slow one is first.
    first = manage("listen", "--sweep-interval", "0.5", "--loglevel", "debug", env=env)
    expect(marker.exists, 30, "the slow callback started", lambda: tail(first))
    slow_started = time.monotonic()
    assert deliveries(fine) == {o.pk: 0 for o in fine}, "processed before the slow one"
    second = manage("listen", "--sweep-interval", "0.5", "--loglevel", "debug", env=env)
    wait_ready(second)
    second_ready = time.monotonic()

    expect(
        lambda: all_once(fine),
        timeout=3.0,
        what="the 30 fine orders processed (by either worker) within 3 s of the second worker "
        "being ready",
        explain=lambda: f"{sum(deliveries(fine).values())} of 30 done; {queue_state(3)}",
        interval=0.05,
    )
    done_at = time.monotonic()
    assert deliveries([slow]) == {slow.pk: 0}, "the slow callback ended first: nothing was tested"
    assert done_at - slow_started < 6

    expect(lambda: all_once([slow]), 20, "the slow order processed", lambda: tail(first))
    assert stop(first) == 0 and stop(second) == 0
    assert deliveries([slow, *fine]) == {o.pk: 1 for o in [slow, *fine]}
    assert ReceivedEvent.objects.filter(listener="on_order_saved:slow").count() == 1
    assert len(marker_runs(marker)) == 1
    assert not Notification.objects.exists()
    second_log = second.stderr_text()
    by_second = sum(len(processed_lines(second_log, history_id(o))) for o in fine)
    by_first = sum(len(processed_lines(first.stderr_text(), history_id(o))) for o in fine)
    # released by the first worker while the slow one ran, taken by the second
    assert by_first + by_second == 30 and by_second > 0, (by_first, by_second)
    write_record(
        "slow callback beside an idle worker",
        {"sent": 31, "lost": 0, "duplicated": 0,
         "fine_done_after_slow_start_s": round(done_at - slow_started, 2),
         "fine_done_after_second_ready_s": round(done_at - second_ready, 2),
         "fine_by_second_worker": by_second},
    )  # fmt: skip


# -- 10: the supervisor ---------------------------------------------------------------------------


def test_10_supervisor_restarts_workers_that_got_sigterm_and_stops_cleanly(manage):
    proc = manage("listen", "--processes", "2", "--sweep-interval", "0.5")

    def explain() -> str:
        return f"children {sorted(children(proc.pid))}; {tail(proc)}"

    expect(
        lambda: len(children(proc.pid)) == 2 and proc.stderr_text().count("worker ready") >= 2,
        30,
        "two workers ready",
        explain,
    )
    first = children(proc.pid)
    for pid in first:
        os.kill(pid, signal.SIGTERM)
    expect(
        lambda: (now := children(proc.pid)) and len(now) == 2 and not now & first,
        30,
        "two new workers after SIGTERM to each",
        explain,
    )
    second = children(proc.pid)
    assert not any(alive(pid) for pid in first)
    order = OrderFactory(status="after restart")
    expect(lambda: all_once([order]), 30, "an order saved afterwards processed", explain)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, tail(proc)
    assert not any(alive(pid) for pid in second), explain()
    assert deliveries([order]) == {order.pk: 1}


UNMIGRATED = "psh_faults_unmigrated"


@pytest.fixture
def unmigrated_url(transactional_db: None) -> Iterator[str]:
    """A database without migrations on the same server: workers refuse to start on it (their
    triggers are missing), while the supervisor itself does not touch the database. Request it
    before ``manage``, so that the processes are killed before it is dropped."""
    url = fresh_database(subprocess_database_url(), UNMIGRATED)
    yield url
    admin = psycopg2.connect(subprocess_database_url())
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{UNMIGRATED}" WITH (FORCE)')
    admin.close()


def supervisor_gives_up(proc: Proc, timeout: float) -> float:
    started = time.monotonic()
    expect(
        lambda: proc.poll() is not None,
        timeout,
        "the supervisor gave up",
        lambda: (
            f"{proc.stderr_text().count('worker process')} worker exits logged; "
            f"children {sorted(children(proc.pid))}"
        ),
        interval=0.2,
    )
    return time.monotonic() - started


@pytest.mark.slow
def test_10_supervisor_exits_non_zero_when_its_workers_cannot_start(unmigrated_url, manage):
    proc = manage("listen", "--processes", "2", url=unmigrated_url)
    gave_up_after = supervisor_gives_up(proc, 60)
    assert proc.returncode != 0, tail(proc)
    lines = [line for line in proc.stderr_text().splitlines() if re.search(r"cannot keep", line)]
    assert len(lines) == 1, tail(proc)
    assert re.search(r"workers?\b.*running", lines[0]), lines[0]
    write_record("supervisor whose workers cannot start", {"gave_up_after_s": gave_up_after})


def test_10_supervisor_without_restarts_exits_non_zero_when_its_workers_fail(
    unmigrated_url, manage
):
    """Not in the issue's list (found writing the above): with --no-restart-on-failure, workers
    that all failed between two of the supervisor's looks made it exit 0 (a race: about one run
    in two, hence three rounds)."""
    for _ in range(3):
        proc = manage("listen", "--processes", "2", "--no-restart-on-failure", url=unmigrated_url)
        supervisor_gives_up(proc, 30)
        assert proc.returncode != 0, tail(proc)


# -- 5: per-object order with writers that do not lock the row ------------------------------------


def article_deliveries(article: Article) -> list[ReceivedEvent]:
    return list(
        ReceivedEvent.objects.filter(listener="ArticleChannel", object_id=str(article.pk))
        .order_by("id")
    )  # fmt: skip


def history_ids(article: Article) -> list[int]:
    return sorted(article.history.values_list("history_id", flat=True))


class Writer(threading.Thread):
    """Runs ``work`` on a connection of its own; records what it raised; closes its connection."""

    def __init__(self, work: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()
            connections.close_all()


def test_5_m2m_changes_of_writers_that_do_not_lock_the_row_are_delivered_in_order(worker):
    article = Article.objects.create(title="contended")
    red, blue = Tag.objects.create(name="red"), Tag.objects.create(name="blue")
    worker.drain()
    t1_added, t1_may_commit = threading.Event(), threading.Event()

    def first() -> None:
        with transaction.atomic():
            Article.objects.get(pk=article.pk).tags.add(red)
            t1_added.set()
            if not t1_may_commit.wait(20):
                raise AssertionError("T1 was never told to commit")

    def second() -> None:
        with transaction.atomic():  # the through-table insert takes only a key-share lock
            Article.objects.get(pk=article.pk).tags.add(blue)

    t1 = Writer(first)
    t1.start()
    try:
        assert t1_added.wait(10), "T1 did not add its tag"
        t2 = Writer(second)
        t2.start()
        # Without the fix T2 commits at once; with it, T2 waits for T1 at its history insert.
        t2.done.wait(1.0)
        worker.drain()  # a worker claims while T1 is still open
    finally:
        t1_may_commit.set()
    t1.join(15)
    t2.join(15)
    assert not t1.is_alive() and not t2.is_alive(), "a writer is still blocked"
    assert t1.error is None and t2.error is None, (t1.error, t2.error)
    worker.drain()

    events = article_deliveries(article)
    delivered = [int(e.history_id) for e in events]
    assert delivered == history_ids(article), f"delivered {delivered}"
    assert [e.history_type for e in events] == ["+", "~", "~"]
    # Each delivered change follows the one delivered before it: one tag added to its tags,
    # and its old is the previous delivery's new.
    tags = [set(e.extra["tags"]) for e in events]
    assert tags[0] == set(), tags
    for before, after in itertools.pairwise(tags):
        assert before < after and len(after - before) == 1, tags
    for before, after in itertools.pairwise(events):
        assert after.old == before.new, (before.new, after.old)
    assert tags[-1] == {"red", "blue"}
    assert not Notification.objects.exists()


def test_5_many_concurrent_m2m_writers_keep_per_object_order(worker):
    articles = [Article.objects.create(title=f"busy{i}") for i in range(2)]
    writers, adds = 4, 10
    tags = {
        (w, i): Tag.objects.create(name=f"w{w}-{i}") for w in range(writers) for i in range(adds)
    }
    worker.drain()

    def write(w: int) -> Callable[[], None]:
        rng = random.Random(w)

        def work() -> None:
            for i in range(adds):
                with transaction.atomic():
                    article = Article.objects.get(pk=articles[(w + i) % 2].pk)
                    article.tags.add(tags[w, i])
                    time.sleep(rng.uniform(0, 0.15))  # commit after others allocated ids

        return work

    threads = [Writer(write(w)) for w in range(writers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        worker.process_available(timeout=0.01)  # claim while the writers commit
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.1))
    assert not any(t.is_alive() for t in threads), "a writer is still blocked after 60 s"
    assert [t.error for t in threads] == [None] * writers
    worker.drain()

    out_of_order: dict[int, int] = {}
    for article in articles:
        delivered = [int(e.history_id) for e in article_deliveries(article)]
        expected = history_ids(article)
        assert len(expected) == 1 + writers * adds // 2
        assert Counter(delivered) == Counter(expected), f"article {article.pk}: lost or twice"
        out_of_order[article.pk] = sum(1 for a, b in itertools.pairwise(delivered) if b < a)
    assert out_of_order == dict.fromkeys(out_of_order, 0), f"deliveries out of order {out_of_order}"
    assert not Notification.objects.exists()
