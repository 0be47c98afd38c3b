"""9. Durable subscriptions: the write cost of a second and third subscription (against
django-pgpubsub's second and third channel), and a catch-up over a filled history.

Write cost: µs per ``save()`` (as in 1.) of a model followed by one subscription, by three, and of
django-pgpubsub models with one and three lockable channels, each with simple-history.

Catch-up: ``n`` history records of ``objects`` objects are filled by SQL (triggers off, one
transaction, as ``drain.fill_ours``); the subscription ``bench-catch-up`` (trivial listener)
starts from the beginning in a real ``manage.py listen`` while a writer keeps saving other
objects at ``rate`` per second. Its position and the worker's RSS are read every 0.2 s; the rate
is records delivered per second between the first and the last reading of the catch-up. Then
the writer stops: the records it saved meanwhile are delivered (the time is reported with how
many were left), and the live lag is measured once caught up: one save at a time, the time from
its commit until the position passes its record (``LIVE_SAMPLES`` saves, a random pause between).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from .harness import ROOT, ratios, sql, summary, table
from .write_cost import measure

MANAGE = str(ROOT / "testproject" / "manage.py")
SUBSCRIPTION = "bench-catch-up"
LIVE_SAMPLES = 20

VARIANTS = {
    "simple-history": "HistItem",
    "ours, 1 subscription": "SubOneItem",
    "ours, 3 subscriptions": "SubThreeItem",
    "pgpubsub, 1 channel": "PubsubItem",
    "pgpubsub, 3 channels": "PubsubThreeItem",
}


def write_cost(saves: int, repetitions: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for mode, runs in measure(VARIANTS, saves, repetitions).items():
        results[mode] = {
            "us_per_save": {name: summary(values) for name, values in runs.items()},
            "ratio_3_to_1": {
                "ours": ratios(runs["ours, 3 subscriptions"], runs["ours, 1 subscription"]),
                "pgpubsub": ratios(runs["pgpubsub, 3 channels"], runs["pgpubsub, 1 channel"]),
            },
            "ratio_vs_simple_history": {
                name: ratios(values, runs["simple-history"]) for name, values in runs.items()
            },
            "repetitions": runs,
        }
    return results


def fill(n: int, objects: int) -> int:
    """``n`` history records of SubOneItem, ``objects`` objects changed in turn (a ``+`` each,
    then ``~``); returns the last history id."""
    from django.db import transaction

    sql("TRUNCATE bench_suboneitem, bench_historicalsuboneitem RESTART IDENTITY")
    sql("DELETE FROM pgpubsub_simplehistory_position WHERE subscription = %s", [SUBSCRIPTION])
    with transaction.atomic():
        sql("SET LOCAL session_replication_role = replica")
        sql(
            "INSERT INTO bench_suboneitem (name, counter) "
            "SELECT 'f' || g, 0 FROM generate_series(1, %s) g",
            [objects],
        )
        sql(
            "INSERT INTO bench_historicalsuboneitem (id, name, counter, history_date, "
            "history_type) SELECT g %% %(objects)s + 1, 'f' || (g %% %(objects)s + 1), "
            "g / %(objects)s, clock_timestamp(), "
            "CASE WHEN g < %(objects)s THEN '+' ELSE '~' END "
            "FROM generate_series(0, %(n)s - 1) g ORDER BY g",
            {"n": n, "objects": objects},
        )
    sql("VACUUM (ANALYZE) bench_suboneitem, bench_historicalsuboneitem")
    return int(sql("SELECT max(history_id) FROM bench_historicalsuboneitem")[0][0])


def _rss_mib(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _position() -> int:
    rows = sql(
        "SELECT position FROM pgpubsub_simplehistory_position WHERE subscription = %s",
        [SUBSCRIPTION],
    )
    return int(rows[0][0]) if rows else 0


class _Writer(threading.Thread):
    """Saves its own objects of SubOneItem at ``rate`` per second until stopped."""

    def __init__(self, rate: float) -> None:
        super().__init__(daemon=True)
        self.rate = rate
        self.stopping = threading.Event()
        self.saves = 0

    def run(self) -> None:
        from django.db import connection

        from testproject.bench.models import SubOneItem

        try:
            items = [SubOneItem.objects.create(name=f"live-{i}") for i in range(10)]
            interval = 1.0 / self.rate
            next_at = time.perf_counter()
            while not self.stopping.is_set():
                item = items[self.saves % len(items)]
                item.counter += 1
                item.save()
                self.saves += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.perf_counter()))
        finally:
            connection.close()


def catch_up(n: int, objects: int, rate: float, mark: int) -> dict[str, Any]:
    last = fill(n, objects)
    env = {**os.environ}
    argv = [sys.executable, MANAGE, "listen", "--channels", SUBSCRIPTION, "--loglevel", "warning"]
    writer = _Writer(rate)
    proc = subprocess.Popen(argv, env=env)
    samples: list[tuple[float, int, float | None]] = []
    try:
        writer.start()
        deadline = time.monotonic() + 60 + n / 500  # a bound, far above the target's time
        while time.monotonic() < deadline and proc.poll() is None:
            position = _position()
            samples.append((time.perf_counter(), position, _rss_mib(proc.pid)))
            if position >= last:
                break
            time.sleep(0.2)
        writer.stopping.set()
        writer.join()
        final = _last_record()
        stopped = time.perf_counter()
        left_at_stop = int(
            sql(
                "SELECT count(*) FROM bench_historicalsuboneitem "
                "WHERE history_id > %s AND history_id <= %s",
                [_position(), final],
            )[0][0]
        )
        rest_seconds = None
        while time.monotonic() < deadline and proc.poll() is None:
            if _position() >= final:
                rest_seconds = time.perf_counter() - stopped
                break
            time.sleep(0.01)
        live_ms = _live_lags(proc, deadline) if rest_seconds is not None else []
        rss_end = _rss_mib(proc.pid)
    finally:
        writer.stopping.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    moving = [s for s in samples if s[1] > 0]
    reached = moving[-1][1] >= last if moving else False
    rate_measured = None
    if len(moving) >= 2 and moving[-1][1] > moving[0][1]:
        rate_measured = (moving[-1][1] - moving[0][1]) / (moving[-1][0] - moving[0][0])
    at_mark = next((s[2] for s in moving if s[1] >= mark), None)
    left = sql(
        "SELECT count(*) FROM pgpubsub_simplehistory_notification n "
        "JOIN pgpubsub_simplehistory_position p ON p.listen_name = n.listen_name "
        "WHERE p.subscription = %s",
        [SUBSCRIPTION],
    )[0][0]
    return {
        "history_records": n,
        "objects": objects,
        "writer_rate": rate,
        "writer_saves": writer.saves,
        "caught_up": reached,
        "records_per_second": rate_measured,
        "mark": mark,
        "rss_mib_at_mark": at_mark,
        "rss_mib_caught_up": moving[-1][2] if moving else None,
        "rss_mib_end": rss_end,
        "left_at_writer_stop": left_at_stop,
        "rest_seconds": rest_seconds,
        "live_lag_ms": summary(live_ms) if live_ms else None,
        "live_lag_samples_ms": live_ms,
        "stored_failures": left,
        "samples": [{"t": t, "position": p, "rss_mib": r} for t, p, r in samples],
    }


def _last_record() -> int:
    return int(sql("SELECT max(history_id) FROM bench_historicalsuboneitem")[0][0])


def _live_lags(proc: subprocess.Popen[bytes], deadline: float) -> list[float]:
    """Caught up: the ms from one save's commit until the subscription's position passes it."""
    import random

    from testproject.bench.models import SubOneItem

    rng = random.Random(17)
    item = SubOneItem.objects.create(name="live-lag")
    lags = []
    for _ in range(LIVE_SAMPLES):
        while _position() < _last_record():  # caught up first (the create, the last sample)
            if time.monotonic() > deadline or proc.poll() is not None:
                return lags
            time.sleep(0.005)
        time.sleep(rng.uniform(0.05, 0.3))  # land anywhere in the worker's poll
        item.counter += 1
        item.save()
        committed = time.perf_counter()
        record = _last_record()
        while _position() < record:
            if time.monotonic() > deadline or proc.poll() is not None:
                return lags
            time.sleep(0.002)
        lags.append((time.perf_counter() - committed) * 1000)
    return lags


def run(saves: int, repetitions: int, n: int, objects: int, rate: float) -> dict[str, Any]:
    return {
        "write_cost": write_cost(saves, repetitions),
        "catch_up": catch_up(n, objects, rate, mark=min(100_000, n // 10)),
    }


def report(results: dict[str, Any]) -> str:
    out = []
    for mode, data in results["write_cost"].items():
        rows = []
        for name in VARIANTS:
            s = data["us_per_save"][name]
            rows.append([name, s["min"], s["median"], s["max"],
                         data["ratio_vs_simple_history"][name]["median"]])  # fmt: skip
        out.append(f"Write cost per save with subscriptions / channels, {mode} (µs)")
        out.append(table(["variant", "min", "median", "max", "x simple-history"], rows))
        r = data["ratio_3_to_1"]
        out.append(f"3 ÷ 1: ours {r['ours']['median']:.3f}, pgpubsub {r['pgpubsub']['median']:.3f}")
    c = results["catch_up"]
    rate = c["records_per_second"]
    out.append(
        f"Catch-up over {c['history_records']:,} history records ({c['objects']:,} objects), "
        f"a writer at {c['writer_rate']:g}/s: "
        + (f"{rate:,.0f} records/s" if rate else "no rate")
        + f", caught up: {'yes' if c['caught_up'] else 'NO'}, RSS {_mib(c['rss_mib_at_mark'])} "
        f"at {c['mark']:,} and {_mib(c['rss_mib_caught_up'])} at the end; the writer's "
        f"{c['left_at_writer_stop']:,} records left when it stopped delivered in "
        f"{_s(c['rest_seconds'])}; then live, one change: "
        + (
            f"{c['live_lag_ms']['median']:.0f} ms median, {c['live_lag_ms']['max']:.0f} ms max "
            f"({len(c['live_lag_samples_ms'])} changes)"
            if c["live_lag_ms"]
            else "not measured"
        )
        + f"; stored failures {c['stored_failures']}"
    )
    return "\n\n".join(out)


def _mib(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f} MiB"


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"
