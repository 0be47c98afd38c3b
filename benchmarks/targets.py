"""The performance targets, checked against one run's results (every figure from that run, except
the 1-writer comparison with the baseline run named below)."""

from __future__ import annotations

import json
import math
from typing import Any

from .harness import ROOT, table

OURS = "ours (history + lockable channel)"
SIMPLE_HISTORY = "simple-history"
PGPUBSUB = "pgpubsub lockable + simple-history"
#: The last run before the wake-up protocol (benchmarks/results/): "no worse than today" at 1
#: writer is measured against it.
BASELINE = ROOT / "benchmarks" / "results" / "2026-11-24-pg15-b.json"


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target whose suites ran: the measured value, the bar, met or not."""
    rows: list[dict[str, Any]] = []

    def add(target: str, value: float | None, bar: str, met: bool) -> None:
        value = math.nan if value is None else float(value)
        rows.append({"target": target, "value": round(value, 4), "bar": bar, "met": met})

    def at_most(target: str, value: float | None, bar: float) -> None:
        add(target, value, f"≤ {bar:g}", value is not None and value <= bar)

    def at_least(target: str, value: float | None, bar: float) -> None:
        add(target, value, f"≥ {bar:g}", value is not None and value >= bar)

    write = results.get("write_cost")
    if write:
        for mode, bar in (("one transaction", 1.0), ("autocommit", 1.05)):
            vs_sh = write[mode]["ratio_vs_simple_history"][OURS]["median"]
            at_most(f"write, {mode}: ours ÷ simple-history", vs_sh, bar)
        for mode in ("autocommit", "one transaction"):
            vs_pp = write[mode]["ratio_vs_pgpubsub"][OURS]["median"]
            add(f"write, {mode}: ours ÷ pgpubsub + history", vs_pp, "< 1", vs_pp < 1)
    _drain(results.get("drain"), at_most, at_least)
    live = results.get("live")
    bench = results.get("pgbench")
    if live and bench and "runs" in bench:
        tps = {r["clients"]: r["tps"] for r in bench["runs"]}
        two = live["summary"]["sql_writer"].get("2")
        if two and tps.get(2):
            share = two["ours"]["events_per_second"]["median"] / tps[2]
            at_least("live, 2 listeners: events/s ÷ pgbench 2-client TPS", share, 0.5)
    if live:
        for key in ("p50_ms", "p99_ms"):
            ratio = live["summary"]["latency_ratio_ours_to_pgpubsub"][key]["median"]
            at_most(f"latency {key[:3]}: ours ÷ pgpubsub", ratio, 1)
    isolation = results.get("isolation")
    if isolation:
        r = isolation["summary"]["ratio_backlog_to_empty"]
        for key in ("p50_ms", "p99_ms"):
            name = f"isolation: latency {key[:3]} with backlog ÷ empty queue"
            at_most(name, r[key]["median"], 1.10)
        name = "isolation: drain rate with backlog ÷ empty queue"
        at_least(name, r["drain_per_second"]["median"], 0.91)
    _writers(results.get("writers"), add, at_most, at_least)
    listeners = results.get("listeners")
    if listeners:
        ratios = listeners["summary"]["ratios"]
        ratio = ratios["ours, 1 worker + 15 LISTEN ÷ ours, nothing listening"]["median"]
        at_least("16 listening sessions (1 worker + 15): writer TPS ÷ none", ratio, 0.90)
    _subscriptions(results.get("subscriptions"), add, at_most, at_least)
    if results.get("statistics"):
        share = results["statistics"].get("own_share_of_off")
        if share:
            name = "statistics on the drain path: their own time ÷ drain time"
            at_most(name, share["median"], 0.05)
    return rows


def _subscriptions(data: dict[str, Any] | None, add: Any, at_most: Any, at_least: Any) -> None:
    if not data:
        return
    for mode, bar in (("one transaction", 1.05), ("autocommit", 1.05)):
        ratio = data["write_cost"][mode]["ratio_3_to_1"]["ours"]["median"]
        at_most(f"subscriptions, write {mode}: 3 ÷ 1 subscription", ratio, bar)
    c = data["catch_up"]
    at_least(
        f"subscriptions: catch-up over {c['history_records']:,} records, records/s",
        c["records_per_second"],
        5000,
    )
    if c["rss_mib_at_mark"] and c["rss_mib_caught_up"]:
        growth = c["rss_mib_caught_up"] / c["rss_mib_at_mark"]
        at_most(f"subscriptions: catch-up RSS at the end ÷ at {c['mark']:,}", growth, 1.10)
    live = c["caught_up"] and c["rest_seconds"] is not None
    add("subscriptions: seconds to the writer's last record, after the catch-up",
        c["rest_seconds"], "delivered", live)  # fmt: skip
    lag = c.get("live_lag_ms")
    # the worker looks for new records every PGPUBSUB_SIMPLEHISTORY_SUBSCRIPTION_POLL (0.1 s)
    at_most("subscriptions, caught up: one change's lag, ms (median)",
            lag["median"] if lag else None, 200)  # fmt: skip


def _drain(drain: dict[str, Any] | None, at_most: Any, at_least: Any) -> None:
    if not drain:
        return
    ours = {r["k"]: r for r in drain["ours"]}
    for path, name, bar in (
        ("pgpubsub_live", "pgpubsub live path", 10),
        ("pgpubsub_recover", "pgpubsub --recover", 3),
    ):
        theirs = {r["k"]: r for r in drain[path]}
        common = sorted(set(ours) & set(theirs))
        if not common:
            continue
        k = 10_000 if 10_000 in common else common[-1]  # the target's K; smaller in --quick
        if theirs[k]["per_second"]:
            ratio = ours[k]["per_second"] / theirs[k]["per_second"]
            at_least(f"drain at {k:,}: ours ÷ {name}", ratio, bar)
    ks = sorted(ours)
    if len(ks) >= 2:
        growth = ours[ks[0]]["per_second"] / ours[ks[-1]]["per_second"]
        at_most(f"drain: cost per notification at {ks[-1]:,} ÷ at {ks[0]:,}", growth, 1.3)


def _writers(writers: dict[str, Any] | None, add: Any, at_most: Any, at_least: Any) -> None:
    if not writers:
        return
    sql_runs = writers["summary"]["sql"]
    many = str(max(writers["clients"]))
    scenarios = [(f"{many} SQL writers", sql_runs[many])]
    scenarios.append((f"{writers['processes']} Django writers", writers["summary"]["django"]))
    for label, data in scenarios:
        r = data["ratios"]
        for worker, theirs in (("1 worker", "listener"), ("no worker", "no listener")):
            at_least(
                f"{label}: ours ({worker}) ÷ pgpubsub ({theirs})",
                r[f"ours, {worker} ÷ pgpubsub, {theirs}"]["median"],
                1.5,
            )
            at_least(
                f"{label}: ours ({worker}) ÷ simple-history alone",
                r[f"ours, {worker} ÷ simple-history"]["median"],
                0.80,
            )
        d = data.get("delivery")
        if d:
            add(f"{label}, 1 worker: changes not delivered (of {d['written']:,})",
                d["missing"] + d["duplicates"], "= 0",
                d["missing"] == 0 and d["duplicates"] == 0)  # fmt: skip
            at_most(f"{label}, 1 worker: p99 latency ms (from history_date)",
                    d["p99_ms"]["median"], 100)  # fmt: skip
    one = sql_runs.get("1")
    baseline = _baseline()
    if one and baseline:
        for worker, theirs, key in (
            ("1 worker", "listener", "with_worker"),
            ("no worker", "no listener", "alone"),
        ):
            ratio = one["ratios"][f"ours, {worker} ÷ pgpubsub, {theirs}"]["median"]
            add(
                f"1 SQL writer, {worker}: ours ÷ pgpubsub, against the baseline run's",
                ratio,
                f"≥ {baseline[key]:.3f}",
                ratio >= baseline[key],
            )


def _baseline() -> dict[str, float] | None:
    """The baseline run's ours ÷ django-pgpubsub TPS of the 1-client SQL writer: with one
    worker (listener) running, and with none. django-pgpubsub's code is the same in both runs,
    so the ratio cancels what the machine's speed does to both."""
    try:
        live = json.loads(BASELINE.read_text())["live"]["summary"]
    except (OSError, KeyError, ValueError):
        return None
    alone = live["sql_writer_alone"]
    worker = live["sql_writer"]["1"]
    return {
        "alone": alone["ours"]["median"] / alone["pgpubsub"]["median"],
        "with_worker": worker["ours"]["writer_per_second"]["median"]
        / worker["pgpubsub"]["writer_per_second"]["median"],
    }


def report(rows: list[dict[str, Any]]) -> str:
    return "Targets (this run)\n" + table(
        ["target", "measured", "bar", "met"],
        [[r["target"], f"{r['value']:.3f}", r["bar"], "yes" if r["met"] else "NO"] for r in rows],
    )
