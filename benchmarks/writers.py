"""7. Concurrent writers: commit throughput of many writers, with and without a worker.

Five variants of the same tracked save, on a table of their own (``objects`` rows):

* ``simple-history``: HistItem, history without any channel (no trigger, no notification);
* ``ours, no worker`` / ``ours, 1 worker``: OursItem (atomic history + lockable OursChannel),
  with no worker running, and with one ``manage.py listen`` worker;
* ``ours, key held, no worker``: OursItem with no worker, but this process holds the channel's
  wake-up key as an awake worker does (writers then send no NOTIFY): the write path's own
  cost under the wake-up protocol, without a worker's CPU on the same machine;
* ``pgpubsub, no listener`` / ``pgpubsub, listener``: PubsubItem (simple-history +
  django-pgpubsub's lockable TriggerChannel), without and with django-pgpubsub's listen loop.

Two writers:

* **SQL** (pgbench, ``clients`` connections): per transaction the SQL of a tracked save, an
  UPDATE of a random row and the INSERT of its historical record (live.py's SQL writer); its
  ``history_date`` is ``clock_timestamp()`` at the INSERT. TPS as pgbench reports it.
* **Django** (``processes`` processes of ``manage.py bench_write``, each saving rows of its
  own round-robin, autocommit): saves/s summed over the processes, all started at once.

With our worker running: every change delivered (each historical record seen by exactly one
callback), and latency from commit to callback start. The commit's time is not recorded per
transaction by either writer (pgbench logs no row, and a Django process would have to ship
every timestamp back), so latency is measured from the record's ``history_date``, written in
the transaction just before its COMMIT: an upper bound of commit-to-callback latency (it adds
the COMMIT itself, a WAL flush), on the same clock as the callback's start (one machine).
django-pgpubsub's listener is not waited for: its backlog would take minutes; its variant
measures what its listener costs the writers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

from . import live
from .harness import paired, sql, summary, table
from .pgbench import _pgbench, run_script

#: variant: (bench model, what runs beside the writers)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "simple-history": ("HistItem", None),
    "ours, no worker": ("OursItem", None),
    "ours, 1 worker": ("OursItem", "ours"),
    "ours, key held, no worker": ("OursItem", "key"),
    "pgpubsub, no listener": ("PubsubItem", None),
    "pgpubsub, listener": ("PubsubItem", "pgpubsub"),
}
#: (numerator, denominator) of the ratios the targets use
RATIOS = (
    ("ours, 1 worker", "pgpubsub, listener"),
    ("ours, no worker", "pgpubsub, no listener"),
    ("ours, 1 worker", "simple-history"),
    ("ours, no worker", "simple-history"),
    ("ours, key held, no worker", "simple-history"),
)
_TABLES = (
    "bench_seen, pgpubsub_simplehistory_notification, pgpubsub_notification, bench_histitem, "
    "bench_oursitem, bench_pubsubitem, bench_historicalhistitem, bench_historicaloursitem, "
    "bench_historicalpubsubitem"
)


def _model(variant: str) -> Any:
    from django.apps import apps

    return apps.get_model("bench", VARIANTS[variant][0])


def _fresh_rows(model: Any, names: list[str]) -> list[int]:
    """Empty every bench table and queue, then rows ``names`` of ``model``; their ids."""
    sql(f"TRUNCATE {_TABLES}")
    table_name = model._meta.db_table
    ids = [
        row[0]
        for row in sql(
            f"INSERT INTO {table_name} (name, counter) SELECT unnest(%s::text[]), 0 RETURNING id",
            [names],
        )
    ]
    sql("TRUNCATE pgpubsub_notification")  # django-pgpubsub's trigger stored the inserts
    sql(f"ANALYZE {table_name}")
    return ids


def _delivery(model: Any, started: float) -> dict[str, Any]:
    """Every historical record of ``model`` against the callbacks our worker recorded."""
    history = model.history.model._meta.db_table
    lag = "(f.started - extract(epoch FROM h.history_date)::float8) * 1000"
    written, delivered, p50, p95, p99, worst = sql(
        f"""
        SELECT count(*), count(f.object_id),
               percentile_cont(0.50) WITHIN GROUP (ORDER BY {lag}),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY {lag}),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY {lag}), max({lag})
        FROM {history} h
        LEFT JOIN (
            SELECT object_id, counter, min(started) AS started FROM bench_seen
            WHERE variant = 'ours' GROUP BY object_id, counter
        ) f ON f.object_id = h.id AND f.counter = h.counter
        """
    )[0]
    seen, distinct = sql(
        "SELECT count(*), count(DISTINCT (object_id, counter)) FROM bench_seen "
        "WHERE variant = 'ours'"
    )[0]
    last = sql("SELECT max(started) FROM bench_seen WHERE variant = 'ours'")[0][0]
    return {
        "written": written,
        "delivered": delivered,
        "missing": written - delivered,
        "duplicates": seen - distinct,
        "latency_ms": {"p50": p50, "p95": p95, "p99": p99, "max": worst},
        "events_per_second": delivered / (last - started) if last and last > started else None,
    }


def _wait_delivered(model: Any, stall: float = 30.0) -> None:
    """Until our worker has seen every historical record of ``model``, or saw nothing new for
    ``stall`` seconds (however long its backlog takes, as long as it moves)."""
    history = model.history.model._meta.db_table
    written = sql(f"SELECT count(*) FROM {history}")[0][0]
    seen, moved = -1, time.monotonic()
    while time.monotonic() - moved < stall:
        now = sql("SELECT count(*) FROM bench_seen WHERE variant = 'ours'")[0][0]
        if now >= written:
            return
        if now != seen:
            seen, moved = now, time.monotonic()
        time.sleep(0.2)


def sql_writers(variant: str, clients: int, seconds: int, objects: int) -> dict[str, Any]:
    binary = _pgbench()
    if binary is None:
        return {"variant": variant, "clients": clients, "error": "pgbench not found"}
    model = _model(variant)
    ids = _fresh_rows(model, [f"c{i}" for i in range(objects)])
    script = live.sql_writer_script(model, ids, history_date="clock_timestamp()")
    beside = VARIANTS[variant][1]
    procs = live._listeners(beside, 1) if beside in ("ours", "pgpubsub") else []
    result: dict[str, Any] = {"variant": variant, "clients": clients}
    try:
        if beside == "key":
            _hold_key(True)
        started = time.time()
        out = run_script(binary, script, seconds, clients)
        match = re.search(r"tps = ([\d.]+)", out)
        result["tps"] = float(match.group(1)) if match else None
        history = model.history.model._meta.db_table
        result["written"] = sql(f"SELECT count(*) FROM {history}")[0][0]
        if beside == "ours":
            _wait_delivered(model)
            result["delivery"] = _delivery(model, started)
        elif beside == "pgpubsub":
            result["seen_by_the_end"] = sql(
                "SELECT count(*) FROM bench_seen WHERE variant = 'pgpubsub'"
            )[0][0]
    finally:
        if beside == "key":
            _hold_key(False)
        live._stop(procs)
    return result


def _hold_key(hold: bool) -> None:
    """Take (or release) OursChannel's wake-up key on this session as an awake worker does
    (pgpubsub_simplehistory/waking.py: shared advisory lock, class AWAKE_CLASS)."""
    from pgpubsub_simplehistory.waking import AWAKE_CLASS
    from testproject.bench.channels import OursChannel

    function = "pg_advisory_lock_shared" if hold else "pg_advisory_unlock_shared"
    sql(f"SELECT {function}(%s, hashtext(%s))", [AWAKE_CLASS, OursChannel.listen_safe_name()])


def django_writers(variant: str, processes: int, seconds: float, objects: int) -> dict[str, Any]:
    model = _model(variant)
    per = max(1, objects // processes)
    _fresh_rows(model, [f"w{p}-{i}" for p in range(processes) for i in range(per)])
    beside = VARIANTS[variant][1]
    procs = live._listeners(beside, 1) if beside in ("ours", "pgpubsub") else []
    writers: list[subprocess.Popen[str]] = []
    result: dict[str, Any] = {"variant": variant, "processes": processes}
    try:
        for p in range(processes):
            argv = [sys.executable, live.MANAGE, "bench_write", "--model", VARIANTS[variant][0],
                    "--prefix", f"w{p}-", "--seconds", str(seconds)]  # fmt: skip
            writers.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "BENCH_RECORD": "0"},
                )
            )
        for w in writers:
            assert w.stdout is not None
            line = w.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"bench_write did not start: {line!r}")
        if beside == "key":
            _hold_key(True)
        started = time.time()
        for w in writers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        done = []
        for w in writers:
            assert w.stdout is not None
            done.append(json.loads(w.stdout.readline()))
            w.wait(30)
        result["saves"] = sum(d["saves"] for d in done)
        result["saves_per_second"] = sum(d["saves"] / d["seconds"] for d in done)
        history = model.history.model._meta.db_table
        result["written"] = sql(f"SELECT count(*) FROM {history}")[0][0]
        if beside == "ours":
            _wait_delivered(model)
            result["delivery"] = _delivery(model, started)
    finally:
        if beside == "key":
            _hold_key(False)
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait()
        live._stop(procs)
    return result


def _rotations(rep: int) -> list[str]:
    names = list(VARIANTS)
    return names[rep % len(names) :] + names[: rep % len(names)]


def run(
    clients: tuple[int, ...],
    seconds: int,
    objects: int,
    processes: int,
    django_seconds: float,
    repetitions: int,
) -> dict[str, Any]:
    """Every variant ``repetitions`` times for each writer, the order rotating."""
    runs: dict[str, list[dict[str, Any]]] = {"sql": [], "django": []}
    for rep in range(repetitions):
        for n in clients:
            for variant in _rotations(rep):
                runs["sql"].append({"repetition": rep, **sql_writers(variant, n, seconds, objects)})
        for variant in _rotations(rep):
            runs["django"].append(
                {"repetition": rep, **django_writers(variant, processes, django_seconds, objects)}
            )
    sql(f"TRUNCATE {_TABLES}")
    by_clients = {}
    for n in clients:
        mine = [r for r in runs["sql"] if r["clients"] == n]
        by_clients[str(n)] = _summarise(mine, "tps")
    return {
        "clients": list(clients),
        "seconds": seconds,
        "objects": objects,
        "processes": processes,
        "django_seconds": django_seconds,
        "repetitions": repetitions,
        "runs": runs,
        "summary": {"sql": by_clients, "django": _summarise(runs["django"], "saves_per_second")},
    }


def _summarise(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rate": {
            v: summary([r[key] for r in rows if r["variant"] == v and r.get(key)]) for v in VARIANTS
        },
        "ratios": {f"{a} ÷ {b}": paired(rows, key, "variant", a, b) for a, b in RATIOS},
    }
    delivered = [r["delivery"] for r in rows if "delivery" in r]
    if delivered:
        out["delivery"] = {
            "written": sum(d["written"] for d in delivered),
            "missing": sum(d["missing"] for d in delivered),
            "duplicates": sum(d["duplicates"] for d in delivered),
            **{
                f"{p}_ms": summary(
                    [d["latency_ms"][p] for d in delivered if d["latency_ms"][p] is not None]
                )
                for p in ("p50", "p99", "max")
            },
            "events_per_second": summary(
                [d["events_per_second"] for d in delivered if d["events_per_second"]]
            ),
        }
    return out


def _table(data: dict[str, Any], unit: str) -> str:
    rows = [[v, data["rate"][v]["min"], data["rate"][v]["median"], data["rate"][v]["max"]]
            for v in VARIANTS]  # fmt: skip
    rows += [[name, "", f"{r['median']:.3f}", ""] for name, r in data["ratios"].items()]
    text = table(["variant", "min", f"median {unit}", "max"], rows)
    d = data.get("delivery")
    if d:
        text += (
            f"\nours, 1 worker: {d['written']:,} changes written, {d['missing']:,} not delivered, "
            f"{d['duplicates']:,} delivered twice; history_date → callback start p50 "
            f"{d['p50_ms']['median']:.1f} ms, p99 {d['p99_ms']['median']:.1f} ms, max "
            f"{d['max_ms']['median']:.1f} ms; end-to-end {d['events_per_second']['median']:,.0f} "
            "events/s (medians over repetitions)"
        )
    return text


def report(results: dict[str, Any]) -> str:
    s = results["summary"]
    reps = results["repetitions"]
    parts = [
        f"Concurrent SQL writers (pgbench: UPDATE + history INSERT per transaction, "
        f"{results['objects']:,} rows, {results['seconds']} s; {reps} repetitions, rotating)"
    ]
    for n, data in s["sql"].items():
        parts.append(f"\n{n} client(s), TPS\n" + _table(data, "TPS"))
    parts.append(
        f"\n{results['processes']} Django writer processes (save() in autocommit, "
        f"{results['django_seconds']:.0f} s; {reps} repetitions)\n" + _table(s["django"], "saves/s")
    )
    return "\n".join(parts)
