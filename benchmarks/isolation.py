"""6. Isolation: one channel's latency and drain rate with other channels' backlog in the queue.

Two conditions, interleaved (the order alternates per repetition):

* **empty**: the queue holds nothing but the served channel's own changes;
* **backlog**: it also holds ``other`` pending notifications of a listen name that no worker
  serves (another deployment's channel, down or slower) and ``retrying`` notifications of the
  served channel (OursChannel) waiting for a retry an hour from now (attempt 1 failed), of other
  objects than the ones written. Inserted with SQL, with the columns ``enqueue_v1`` writes.

Latency: live.py's latency scenario (a Django writer at a fixed rate, one ``listen`` worker,
commit to callback start). Drain: ``k`` stored notifications of OursChannel drained in this
process (the worker's sweep path, drain.py), notifications/s.
"""

from __future__ import annotations

import time
from typing import Any

from . import drain, live
from .harness import paired, sql, summary, table

#: The listen name of the channel that no worker serves.
UNSERVED = "psh_bench_unserved"
CONDITIONS = ("empty", "backlog")
_COLUMNS = (
    "listen_name, model, history_model, history_id, history_type, object_id, "
    "migration_id_at_change, context, created_at, state, attempts, available_at, last_error, "
    "last_traceback, leased_by"
)


def store_backlog(other: int, retrying: int) -> None:
    """``other`` pending notifications on UNSERVED and ``retrying`` of OursChannel due in an
    hour, of objects (ids above 10**9) that the scenarios never write."""
    from testproject.bench.channels import OursChannel
    from testproject.bench.models import OursItem

    model, history = OursItem._meta.label, OursItem.history.model._meta.label
    migration = "(SELECT max(id) FROM django_migrations WHERE app IN ('bench'))"
    sql(
        f"INSERT INTO pgpubsub_simplehistory_notification ({_COLUMNS}) "
        f"SELECT %s, %s, %s, g::text, '~', g::text, {migration}, '{{}}', clock_timestamp(), "
        "'pending', 0, now(), '', '', '' FROM generate_series(1, %s) g",
        [UNSERVED, model, history, other],
    )
    sql(
        f"INSERT INTO pgpubsub_simplehistory_notification ({_COLUMNS}) "
        f"SELECT %s, %s, %s, (1000000000 + g)::text, '~', (1000000000 + g)::text, {migration}, "
        "'{}', clock_timestamp() - interval '1 minute', 'pending', 1, now() + interval '1 hour', "
        "'RuntimeError: bench', 'Traceback (most recent call last): ...', '' "
        "FROM generate_series(1, %s) g",
        [OursChannel.listen_safe_name(), model, history, retrying],
    )


def _prepare(condition: str, other: int, retrying: int) -> None:
    if condition == "backlog":
        store_backlog(other, retrying)
    sql("ANALYZE pgpubsub_simplehistory_notification")  # both conditions alike


def _check_backlog(condition: str, other: int, retrying: int) -> dict[str, Any]:
    """What is left of the backlog, untouched (no attempt counted): the worker claims none."""
    unserved, waiting = sql(
        "SELECT count(*) FILTER (WHERE listen_name = %s AND attempts = 0), "
        "count(*) FILTER (WHERE listen_name <> %s AND attempts = 1 "
        "AND available_at > now() + interval '30 minutes') "
        "FROM pgpubsub_simplehistory_notification WHERE state = 'pending'",
        [UNSERVED, UNSERVED],
    )[0]
    expected = (other, retrying) if condition == "backlog" else (0, 0)
    return {"unserved": unserved, "retrying": waiting, "intact": (unserved, waiting) == expected}


def latency(condition: str, rate: float, seconds: float, other: int, retrying: int) -> Any:
    result = live.latency(
        "ours", rate, seconds, prepare=lambda: _prepare(condition, other, retrying)
    )
    return {"condition": condition, **result, "left": _check_backlog(condition, other, retrying)}


def drain_rate(condition: str, k: int, other: int, retrying: int) -> dict[str, Any]:
    drain._reset()
    drain.fill_ours(k)
    if condition == "backlog":
        store_backlog(other, retrying)
    drain.settle_tables()
    started = time.perf_counter()
    done = drain.drain_ours()
    seconds = time.perf_counter() - started
    return {
        "condition": condition,
        "k": k,
        "drained": done,
        "seconds": seconds,
        "per_second": done / seconds,
        "left": _check_backlog(condition, other, retrying),
    }


def run(
    rate: float, seconds: float, k: int, other: int, retrying: int, repetitions: int
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"latency": [], "drain": []}
    drain.warm_up()
    for rep in range(repetitions):
        order = CONDITIONS if rep % 2 == 0 else CONDITIONS[::-1]
        for condition in order:
            runs["latency"].append(
                {"repetition": rep, **latency(condition, rate, seconds, other, retrying)}
            )
        for condition in order:
            runs["drain"].append({"repetition": rep, **drain_rate(condition, k, other, retrying)})
    drain._reset()
    sql("TRUNCATE bench_seen")

    def values(kind: str, condition: str, key: str) -> list[float]:
        return [r[key] for r in runs[kind] if r["condition"] == condition and key in r]

    def ratio(kind: str, key: str) -> dict[str, float]:
        return paired(runs[kind], key, "condition", "backlog", "empty")

    return {
        "rate": rate,
        "seconds": seconds,
        "k": k,
        "other_channel_pending": other,
        "retrying": retrying,
        "repetitions": repetitions,
        "runs": runs,
        "summary": {
            "latency": {
                c: {key: summary(values("latency", c, key)) for key in ("p50_ms", "p99_ms")}
                for c in CONDITIONS
            },
            "drain_per_second": {c: summary(values("drain", c, "per_second")) for c in CONDITIONS},
            "ratio_backlog_to_empty": {
                "p50_ms": ratio("latency", "p50_ms"),
                "p99_ms": ratio("latency", "p99_ms"),
                "drain_per_second": ratio("drain", "per_second"),
            },
        },
    }


def report(results: dict[str, Any]) -> str:
    s = results["summary"]
    rows = []
    for c in CONDITIONS:
        lat, d = s["latency"][c], s["drain_per_second"][c]
        rows.append([c, lat["p50_ms"]["median"], lat["p99_ms"]["median"], d["median"]])
    r = s["ratio_backlog_to_empty"]
    rows.append(["backlog ÷ empty", *(f"{r[key]['median']:.3f}" for key in r)])
    runs = results["runs"]["latency"] + results["runs"]["drain"]
    broken = [r for r in runs if not r["left"]["intact"]]
    missed = [r for r in results["runs"]["drain"] if r["drained"] != r["k"]]
    missed += [r for r in results["runs"]["latency"] if r.get("received") != r.get("changes")]
    notes = ""
    if broken:
        notes += f"\nBACKLOG TOUCHED in {len(broken)} run(s): {[r['left'] for r in broken]}"
    if missed:
        notes += f"\nNOT EVERY CHANGE HANDLED in {len(missed)} run(s)"
    return (
        f"Isolation: OursChannel with {results['other_channel_pending']:,} pending notifications "
        f"of an unserved channel and {results['retrying']:,} of its own waiting for a retry "
        f"(latency at {results['rate']:.0f} changes/s for {results['seconds']:.0f} s, 1 worker; "
        f"drain of {results['k']:,}; median of {results['repetitions']} repetitions)\n"
        + table(["queue", "p50 ms", "p99 ms", "drain notifications/s"], rows)
        + notes
    )
