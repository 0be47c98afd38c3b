"""The performance targets, checked against one run's results (every figure from that run)."""

from __future__ import annotations

from typing import Any

from .harness import table

OURS = "ours (history + lockable channel)"
SIMPLE_HISTORY = "simple-history"
PGPUBSUB = "pgpubsub lockable + simple-history"


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target whose suites ran: the measured value, the bar, met or not."""
    rows: list[dict[str, Any]] = []

    def add(target: str, value: float, bar: str, met: bool) -> None:
        rows.append({"target": target, "value": round(value, 4), "bar": bar, "met": met})

    write = results.get("write_cost")
    if write:
        for mode in ("autocommit", "one transaction"):
            vs_sh = write[mode]["ratio_vs_simple_history"][OURS]["median"]
            vs_pp = write[mode]["ratio_vs_pgpubsub"][OURS]["median"]
            add(f"write, {mode}: ours ÷ simple-history", vs_sh, "≤ 1.10", vs_sh <= 1.10)
            add(f"write, {mode}: ours ÷ pgpubsub + history", vs_pp, "< 1", vs_pp < 1)
        auto = write["autocommit"]["ratio_vs_simple_history"][OURS]["median"]
        add("write, autocommit: cheaper than simple-history alone", auto, "< 1", auto < 1)
    drain = results.get("drain")
    if drain:
        ours = {r["k"]: r for r in drain["ours"]}
        live = {r["k"]: r for r in drain["pgpubsub_live"]}
        if 10_000 in ours and 10_000 in live and live[10_000]["per_second"]:
            ratio = ours[10_000]["per_second"] / live[10_000]["per_second"]
            add("drain at 10k: ours ÷ pgpubsub live path", ratio, "≥ 10", ratio >= 10)
        ks = sorted(ours)
        if len(ks) >= 2:
            first, last = ours[ks[0]], ours[ks[-1]]
            growth = (last["seconds"] / last["k"]) / (first["seconds"] / first["k"])
            add(f"drain: cost per notification {ks[-1]} ÷ {ks[0]}", growth, "≤ 1.5", growth <= 1.5)
    live = results.get("live")
    bench = results.get("pgbench")
    if live and bench and "runs" in bench:
        tps = {r["clients"]: r["tps"] for r in bench["runs"]}
        two = live["summary"]["sql_writer"].get("2")
        if two and tps.get(2):
            share = two["ours"]["events_per_second"]["median"] / tps[2]
            add("live, 2 listeners: events/s ÷ pgbench 2-client TPS", share, "≥ 0.5", share >= 0.5)
    if live:
        for key in ("p50_ms", "p99_ms"):
            ratio = live["summary"]["latency_ratio_ours_to_pgpubsub"][key]["median"]
            add(f"latency {key[:3]}: ours ÷ pgpubsub", ratio, "≤ 1", ratio <= 1)
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    return "Targets (this run)\n" + table(
        ["target", "measured", "bar", "met"],
        [[r["target"], f"{r['value']:.3f}", r["bar"], "yes" if r["met"] else "NO"] for r in rows],
    )
