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
from collections.abc import Callable
from typing import Any

from .harness import ROOT, ratios, sql, summary, table

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
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            connected = sql(
                "SELECT count(DISTINCT client_port) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s",
                [APP_NAME],
            )[0][0]
            if connected >= processes:
                break
            if any(proc.poll() is not None for proc in procs):
                # its scenario then records what it saw (nothing); the other scenarios go on
                print(f"benchmarks: a {variant} listener exited on start", file=sys.stderr)
                break
            time.sleep(0.2)
        time.sleep(1.0)  # connected: give LISTEN and the start-up sweep a moment
    except BaseException:
        _stop(procs)
        raise
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
    SELECT id, name, counter, {history_date}, '~' FROM {table} WHERE id = :id;
END;
"""


def sql_writer_script(model: Any, ids: list[int], history_date: str = "now()") -> str:
    """pgbench script of a tracked save of one of ``ids``: UPDATE the row, INSERT its historical
    record (``history_date`` is the SQL of its timestamp), in one transaction."""
    return _SQL_WRITER.format(
        low=min(ids),
        high=max(ids),
        table=model._meta.db_table,
        history=model.history.model._meta.db_table,
        history_date=history_date,
    )


def sql_writer_throughput(
    variant: str, processes: int, seconds: int, clients: int = 1
) -> dict[str, Any]:
    """Listeners against a writer as fast as the database allows: pgbench doing, per
    transaction, the SQL of a tracked save (UPDATE the row, INSERT its historical record).
    With ``processes=0`` no listener runs: the writer's own ceiling."""
    from .pgbench import _pgbench, run_script

    binary = _pgbench()
    if binary is None:
        return {"variant": variant, "error": "pgbench not found"}
    model = _fresh_objects(variant, "sqlw")
    ids = list(model.objects.values_list("pk", flat=True))
    history = model.history.model._meta.db_table
    script = sql_writer_script(model, ids)
    procs = _listeners(variant, processes) if processes else []
    try:
        first = time.time()
        out = run_script(binary, script, seconds, clients)
        writer_seconds = time.time() - first
        written = sql(f"SELECT count(*) FROM {history}")[0][0]
        seen = _wait_seen(variant, written, timeout=max(120.0, written / 50)) if procs else 0
    finally:
        _stop(procs)
    return {
        "variant": variant,
        "processes": processes,
        "writer_clients": clients,
        "changes": written,
        "seen": seen,
        "writer_per_second": written / writer_seconds,
        "events_per_second": _events_per_second(variant, seen, first) if procs else None,
        "pgbench_output": out[-400:],
    }


def latency(
    variant: str, rate: float, seconds: float, prepare: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Latency at ``rate`` changes/s for ``seconds``, one listener; ``prepare()`` runs on the
    emptied queue before the listener starts (isolation.py stores other channels' backlog)."""
    _fresh_objects(variant, "lat")
    if prepare is not None:
        prepare()
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


VARIANTS = ("ours", "pgpubsub")


def run(
    changes: int,
    rate: float,
    seconds: float,
    process_counts: tuple[int, ...] = (1, 2),
    sql_writer_seconds: int = 10,
    repetitions: int = 3,
) -> dict[str, Any]:
    """Every scenario ``repetitions`` times, the two variants interleaved (the order alternates)."""
    runs: dict[str, list[dict[str, Any]]] = {
        "throughput": [],
        "sql_writer": [],
        "sql_writer_alone": [],
        "latency": [],
    }
    for rep in range(repetitions):
        order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
        for processes in process_counts:
            for variant in order:
                runs["throughput"].append(
                    {"repetition": rep, **throughput(variant, processes, changes)}
                )
        for variant in order:
            runs["sql_writer_alone"].append(
                {"repetition": rep, **sql_writer_throughput(variant, 0, sql_writer_seconds)}
            )
        for processes in process_counts:
            for variant in order:
                runs["sql_writer"].append(
                    {
                        "repetition": rep,
                        **sql_writer_throughput(variant, processes, sql_writer_seconds),
                    }
                )
        for variant in order:
            runs["latency"].append({"repetition": rep, **latency(variant, rate, seconds)})
    return {
        "repetitions": repetitions,
        "runs": runs,
        "summary": {
            "throughput": _summarise(runs["throughput"], "events_per_second"),
            "sql_writer": _summarise(runs["sql_writer"], "events_per_second"),
            "sql_writer_alone": {
                variant: summary(
                    [
                        r["writer_per_second"]
                        for r in runs["sql_writer_alone"]
                        if r["variant"] == variant
                    ]
                )
                for variant in VARIANTS
            },
            "latency": {
                variant: {
                    key: summary(
                        [r[key] for r in runs["latency"] if r["variant"] == variant and key in r]
                    )
                    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
                }
                for variant in VARIANTS
            },
            "latency_ratio_ours_to_pgpubsub": {
                key: ratios(*_paired(runs["latency"], key)) for key in ("p50_ms", "p99_ms")
            },
        },
    }


def _paired(
    rows: list[dict[str, Any]], key: str, processes: int | None = None
) -> tuple[list[float], list[float]]:
    """(ours, pgpubsub) values of ``key``, paired by repetition."""
    by_rep: dict[int, dict[str, float]] = {}
    for r in rows:
        if key in r and (processes is None or r.get("processes") == processes):
            by_rep.setdefault(r["repetition"], {})[r["variant"]] = r[key]
    pairs = [v for v in by_rep.values() if len(v) == 2]
    return [v["ours"] for v in pairs], [v["pgpubsub"] for v in pairs]


def _summarise(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Per listener count: each variant's writer/s and events/s, and ours ÷ django-pgpubsub."""
    out: dict[str, Any] = {}
    for processes in sorted({r["processes"] for r in rows if "processes" in r}):
        mine = [r for r in rows if r.get("processes") == processes]
        out[str(processes)] = {
            variant: {
                "events_per_second": summary(
                    [r[key] for r in mine if r["variant"] == variant and key in r]
                ),
                "writer_per_second": summary(
                    [
                        r["writer_per_second"]
                        for r in mine
                        if r["variant"] == variant and "writer_per_second" in r
                    ]
                ),
            }
            for variant in VARIANTS
        }
        out[str(processes)]["ratio_ours_to_pgpubsub"] = ratios(*_paired(mine, key, processes))
    return out


def report(results: dict[str, Any]) -> str:
    s = results["summary"]
    reps = results["repetitions"]

    def rows(scenario: dict[str, Any]) -> list[list[Any]]:
        out = []
        for processes, data in scenario.items():
            for variant in VARIANTS:
                e, w = data[variant]["events_per_second"], data[variant]["writer_per_second"]
                out.append([variant, processes, w["median"], e["min"], e["median"], e["max"]])
            out.append(
                ["ours ÷ pgpubsub", processes, "", "", data["ratio_ours_to_pgpubsub"]["median"], ""]
            )
        return out

    headers = ["listener", "processes", "writer/s", "min", "median end-to-end/s", "max"]
    lat = []
    for variant in VARIANTS:
        d = s["latency"][variant]
        lat.append([variant] + [d[k]["median"] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")])
    r = s["latency_ratio_ours_to_pgpubsub"]
    lat.append(["ours ÷ pgpubsub", r["p50_ms"]["median"], "", r["p99_ms"]["median"], ""])
    return (
        f"Live stream, Django writer as fast as it can ({reps} repetitions, interleaved)\n"
        + table(headers, rows(s["throughput"]))
        + f"\n\nLive stream, SQL writer (pgbench, 1 client: UPDATE + history INSERT; {reps} "
        "repetitions)\n"
        + table(headers, rows(s["sql_writer"]))
        + "\nThe same writer with no listener running (its own ceiling), transactions/s: "
        + ", ".join(f"{v} {s['sql_writer_alone'][v]['median']:,.0f}" for v in VARIANTS)
        + f"\n\nLatency at a fixed offered rate (commit → callback start, ms; median of {reps} "
        "repetitions)\n" + table(["listener", "p50", "p95", "p99", "max"], lat)
    )
