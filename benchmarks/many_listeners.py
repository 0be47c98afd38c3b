"""8. Many listening processes: one SQL writer's TPS with 16 listening sessions on the server.

PostgreSQL (18 and older) signals every backend that LISTENs in the database at each commit of a
transaction that sent a NOTIFY, whatever the channel; each signalled backend wakes up and reads
the notification queue. That cost is the server's, per listening *backend*: what the client
process on the other end does is irrelevant as long as it is idle. So 15 of the 16 listening
sessions are plain connections of this process that LISTEN on other channel names and never
read; the 16th is a real worker of the writer's channel (or none, or django-pgpubsub's).

The writer is pgbench, 1 client, live.py's SQL of a tracked save (UPDATE + history INSERT).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import live
from .harness import paired, summary, table
from .pgbench import _pgbench, run_script

#: configuration: (variant, what listens: the real listener, raw LISTEN sessions)
CONFIGS: dict[str, tuple[str, bool, int]] = {
    "ours, nothing listening": ("ours", False, 0),
    "ours, 1 worker": ("ours", True, 0),
    "ours, 1 worker + 15 LISTEN": ("ours", True, 15),
    "ours, 16 LISTEN, no worker": ("ours", False, 16),
    "pgpubsub, nothing listening": ("pgpubsub", False, 0),
    "pgpubsub, 16 LISTEN, no listener": ("pgpubsub", False, 16),
    "pgpubsub, 1 listener + 15 LISTEN": ("pgpubsub", True, 15),
}
#: (numerator, denominator): the first is the target's
RATIOS = (
    ("ours, 1 worker + 15 LISTEN", "ours, nothing listening"),
    ("ours, 1 worker + 15 LISTEN", "ours, 1 worker"),
    ("ours, 16 LISTEN, no worker", "ours, nothing listening"),
    ("pgpubsub, 16 LISTEN, no listener", "pgpubsub, nothing listening"),
    ("pgpubsub, 1 listener + 15 LISTEN", "pgpubsub, nothing listening"),
)


@contextmanager
def raw_listeners(n: int) -> Iterator[list[Any]]:
    """``n`` sessions that LISTEN on channels nobody notifies, idle until closed."""
    from django.db import connection

    opened: list[Any] = []
    try:
        for i in range(n):
            raw = connection.get_new_connection(connection.get_connection_params())
            raw.autocommit = True
            cursor = raw.cursor()
            cursor.execute(f'LISTEN "psh_bench_other_{i}"')
            cursor.close()
            opened.append(raw)
        yield opened
    finally:
        for raw in opened:
            raw.close()


def writer_tps(config: str, seconds: int, objects: int) -> dict[str, Any]:
    binary = _pgbench()
    if binary is None:
        return {"config": config, "error": "pgbench not found"}
    variant, real, raw = CONFIGS[config]
    model = live._model(variant)
    model.objects.all().delete()
    model.objects.bulk_create([model(name=f"ml{i}") for i in range(objects)])
    live._reset()
    ids = list(model.objects.values_list("pk", flat=True))
    script = live.sql_writer_script(model, ids)
    procs = live._listeners(variant, 1) if real else []
    try:
        with raw_listeners(raw):
            started = time.time()
            out = run_script(binary, script, seconds, 1)
            elapsed = time.time() - started
    finally:
        live._stop(procs)
    match = re.search(r"tps = ([\d.]+)", out)
    return {
        "config": config,
        "tps": float(match.group(1)) if match else None,
        "seconds": elapsed,
        "listening_sessions": raw + (1 if real else 0),
    }


def run(seconds: int, objects: int, repetitions: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    names = list(CONFIGS)
    for rep in range(repetitions):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for config in order:
            runs.append({"repetition": rep, **writer_tps(config, seconds, objects)})
    live._reset()
    return {
        "seconds": seconds,
        "repetitions": repetitions,
        "runs": runs,
        "summary": {
            "tps": {
                c: summary([r["tps"] for r in runs if r["config"] == c and r.get("tps")])
                for c in CONFIGS
            },
            "ratios": {f"{a} ÷ {b}": paired(runs, "tps", "config", a, b) for a, b in RATIOS},
        },
    }


def report(results: dict[str, Any]) -> str:
    s = results["summary"]
    rows = [[c, s["tps"][c]["min"], s["tps"][c]["median"], s["tps"][c]["max"]] for c in CONFIGS]
    rows += [[name, "", f"{r['median']:.3f}", ""] for name, r in s["ratios"].items()]
    return (
        f"Many listening sessions: SQL writer (pgbench, 1 client) TPS, {results['seconds']} s, "
        f"{results['repetitions']} repetitions, rotating\n"
        + table(["listening", "min", "median TPS", "max"], rows)
    )
