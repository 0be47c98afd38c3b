"""3. Live stream: a writer commits while 1 or 2 listener processes consume.

Throughput: the writer commits ``changes`` saves as fast as it can; events/s is changes divided by
the time from the first commit to the last callback start. Latency: the writer offers ``rate``
changes/s; latency is callback start (listener process) minus the end of the writer's commit.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from .harness import ROOT, sql, table

MANAGE = str(ROOT / "testproject" / "manage.py")


APP_NAME = "psh-bench-listener"


def _listeners(variant: str, processes: int) -> list[subprocess.Popen[bytes]]:
    url = os.environ["DATABASE_URL"]
    url += ("&" if "?" in url else "?") + f"application_name={APP_NAME}"
    env = {**os.environ, "BENCH_RECORD": "1", "DATABASE_URL": url}
    if variant == "ours":
        argv = [sys.executable, MANAGE, "listen", "--channels",
                "testproject.bench.channels.OursChannel", "--processes", str(processes),
                "--loglevel", "warning"]  # fmt: skip
        procs = [subprocess.Popen(argv, env=env)]
    else:
        argv = [sys.executable, "-m", "benchmarks.pgpubsub_listener"]
        procs = [subprocess.Popen(argv, env=env, cwd=ROOT) for _ in range(processes)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        connected = sql(
            "SELECT count(DISTINCT client_port) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [APP_NAME],
        )[0][0]
        if connected >= processes:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # connected: give LISTEN and the start-up sweep a moment
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _model(variant: str) -> Any:
    from testproject.bench.models import OursItem, PubsubItem

    return OursItem if variant == "ours" else PubsubItem


def _fresh_objects(variant: str, prefix: str) -> Any:
    """100 fresh rows of the variant's model, empty history and queues; the model."""
    model = _model(variant)
    model.objects.all().delete()
    model.objects.bulk_create([model(name=f"{prefix}{i}") for i in range(100)])
    _reset()
    return model


def _events_per_second(variant: str, seen: int, first: float) -> float:
    """Events seen divided by the time from ``first`` to the last callback start."""
    last = sql("SELECT max(started) FROM bench_seen WHERE variant = %s", [variant])[0][0]
    duration = (last or time.time()) - first
    return seen / duration if duration > 0 else 0.0


def _reset() -> None:
    sql(
        "TRUNCATE bench_seen, pgpubsub_simplehistory_notification, pgpubsub_notification, "
        "bench_historicaloursitem, bench_historicalpubsubitem"
    )


def _write(variant: str, changes: int, rate: float) -> dict[tuple[int, int], float]:
    model = _model(variant)
    objects = list(model.objects.all()[:100])
    committed: dict[tuple[int, int], float] = {}
    interval = 1.0 / rate if rate else 0.0
    started = time.perf_counter()
    for i in range(changes):
        if interval:
            delay = started + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        obj = objects[i % len(objects)]
        obj.counter += 1
        obj.save()
        committed[(obj.pk, obj.counter)] = time.time()
    return committed


def _wait_seen(variant: str, changes: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = sql("SELECT count(*) FROM bench_seen WHERE variant = %s", [variant])[0][0]
        if seen >= changes:
            break
        time.sleep(0.1)
    return int(seen)


def throughput(variant: str, processes: int, changes: int) -> dict[str, Any]:
    _fresh_objects(variant, "live")
    procs = _listeners(variant, processes)
    try:
        first = time.time()
        committed = _write(variant, changes, rate=0)
        writer_seconds = time.time() - first
        seen = _wait_seen(variant, changes, timeout=max(60.0, changes / 50))
    finally:
        _stop(procs)
    return {
        "variant": variant,
        "processes": processes,
        "changes": changes,
        "seen": seen,
        "writer_per_second": len(committed) / writer_seconds,
        "events_per_second": _events_per_second(variant, seen, first),
    }


_SQL_WRITER = """\\set id random({low}, {high})
BEGIN;
UPDATE {table} SET counter = counter + 1 WHERE id = :id;
INSERT INTO {history} (id, name, counter, history_date, history_type)
    SELECT id, name, counter, now(), '~' FROM {table} WHERE id = :id;
END;
"""


def sql_writer_throughput(
    variant: str, processes: int, seconds: int, clients: int = 1
) -> dict[str, Any]:
    """Listeners against a writer as fast as the database allows: pgbench doing, per
    transaction, the SQL of a tracked save (UPDATE the row, INSERT its historical record)."""
    from .pgbench import _pgbench, run_script

    binary = _pgbench()
    if binary is None:
        return {"variant": variant, "error": "pgbench not found"}
    model = _fresh_objects(variant, "sqlw")
    ids = list(model.objects.values_list("pk", flat=True))
    history = model.history.model._meta.db_table
    script = _SQL_WRITER.format(
        low=min(ids), high=max(ids), table=model._meta.db_table, history=history
    )
    procs = _listeners(variant, processes)
    try:
        first = time.time()
        out = run_script(binary, script, seconds, clients)
        writer_seconds = time.time() - first
        written = sql(f"SELECT count(*) FROM {history}")[0][0]
        seen = _wait_seen(variant, written, timeout=max(120.0, written / 50))
    finally:
        _stop(procs)
    return {
        "variant": variant,
        "processes": processes,
        "writer_clients": clients,
        "changes": written,
        "seen": seen,
        "writer_per_second": written / writer_seconds,
        "events_per_second": _events_per_second(variant, seen, first),
        "pgbench_output": out[-400:],
    }


def latency(variant: str, rate: float, seconds: float) -> dict[str, Any]:
    _fresh_objects(variant, "lat")
    changes = int(rate * seconds)
    procs = _listeners(variant, 1)
    try:
        committed = _write(variant, changes, rate=rate)
        _wait_seen(variant, changes, timeout=60)
    finally:
        _stop(procs)
    rows = sql("SELECT object_id, counter, started FROM bench_seen WHERE variant = %s", [variant])
    latencies = sorted(
        (started - committed[(oid, counter)]) * 1000
        for oid, counter, started in rows
        if (oid, counter) in committed
    )
    if not latencies:
        return {"variant": variant, "error": "no events received"}

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {
        "variant": variant,
        "rate": rate,
        "changes": changes,
        "received": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": latencies[-1],
    }


def run(
    changes: int,
    rate: float,
    seconds: float,
    process_counts: tuple[int, ...] = (1, 2),
    sql_writer_seconds: int = 10,
) -> dict[str, Any]:
    results: dict[str, Any] = {"throughput": [], "sql_writer": [], "latency": []}
    for processes in process_counts:
        for variant in ("ours", "pgpubsub"):
            results["throughput"].append(throughput(variant, processes, changes))
    for processes in process_counts:
        for variant in ("ours", "pgpubsub"):
            results["sql_writer"].append(
                sql_writer_throughput(variant, processes, sql_writer_seconds)
            )
    for variant in ("ours", "pgpubsub"):
        results["latency"].append(latency(variant, rate, seconds))
    return results


def report(results: dict[str, Any]) -> str:
    rows = [
        [r["variant"], r["processes"], r["changes"], r["seen"], r["writer_per_second"],
         r["events_per_second"]]
        for r in results["throughput"]
    ]  # fmt: skip
    lat = [
        [r["variant"], r.get("rate"), r.get("received"), r.get("p50_ms"), r.get("p95_ms"),
         r.get("p99_ms"), r.get("max_ms")]
        for r in results["latency"]
    ]  # fmt: skip
    sqlw = [
        [r["variant"], r.get("processes"), r.get("changes"), r.get("seen"),
         r.get("writer_per_second"), r.get("events_per_second")]
        for r in results.get("sql_writer", [])
    ]  # fmt: skip
    return (
        "Live stream (writer as fast as it can)\n"
        + table(["listener", "processes", "changes", "received", "writer/s", "end-to-end/s"], rows)
        + "\n\nLive stream, SQL writer (pgbench, 1 client: UPDATE + history INSERT)\n"
        + table(["listener", "processes", "changes", "received", "writer/s", "end-to-end/s"], sqlw)
        + "\n\nLatency at a fixed offered rate (commit → callback start, ms)\n"
        + table(["listener", "rate/s", "received", "p50", "p95", "p99", "max"], lat)
    )
