"""``python -m benchmarks [--quick] [--only NAME ...] [--json PATH]``: run, print, write JSON."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

from . import (
    drain,
    harness,
    isolation,
    live,
    many_listeners,
    pgbench,
    replay,
    subscriptions,
    targets,
    write_cost,
    writers,
)

SUITES = (
    "write",
    "drain",
    "live",
    "pgbench",
    "replay",
    "isolation",
    "writers",
    "listeners",
    "subscriptions",
    "statistics",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Tiny sizes (a smoke run).")
    parser.add_argument("--only", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--json", default="bench-results/latest.json", help="Where to write.")
    args = parser.parse_args(argv)
    q = args.quick

    harness.setup(fresh=True)
    results: dict[str, object] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": "python -m benchmarks " + " ".join(argv or sys.argv[1:]),
        "environment": harness.environment(),
    }
    reports = []
    started = time.perf_counter()
    if "write" in args.only:
        data = write_cost.run(saves=30 if q else 300, repetitions=2 if q else 7)
        results["write_cost"] = data
        reports.append(write_cost.report(data))
    if "drain" in args.only:
        ks = [200, 1000] if q else [1_000, 10_000, 100_000, 1_000_000]
        pks = [200] if q else [1_000, 10_000]
        data2 = drain.run(
            ks,
            pks,
            cap_seconds=30 if q else 180,
            small_repetitions=1 if q else 3,
            sample=None if q else 50_000,
            ours_cap_seconds=None if q else 150,
        )
        results["drain"] = data2
        reports.append(drain.report(data2))
    if "live" in args.only:
        data3 = live.run(
            changes=100 if q else 2000,
            rate=200,
            seconds=1 if q else 10,
            process_counts=(1,) if q else (1, 2),
            sql_writer_seconds=2 if q else 10,
            repetitions=1 if q else 3,
        )
        results["live"] = data3
        reports.append(live.report(data3))
    if "pgbench" in args.only:
        data4 = pgbench.run(seconds=2 if q else 10, clients=[1, 2])
        results["pgbench"] = data4
        reports.append(pgbench.report(data4))
    if "replay" in args.only:
        data5 = replay.run([500, 2000] if q else [2_000, 10_000])
        results["replay"] = data5
        reports.append(replay.report(data5))
    if "isolation" in args.only:
        data6 = isolation.run(
            rate=200,
            seconds=1 if q else 10,
            k=300 if q else 5_000,
            other=2_500 if q else 25_000,
            retrying=500 if q else 5_000,
            repetitions=1 if q else 3,
        )
        results["isolation"] = data6
        reports.append(isolation.report(data6))
    if "writers" in args.only:
        data7 = writers.run(
            clients=(32,) if q else (1, 32),
            seconds=1 if q else 10,
            objects=1000,
            processes=2 if q else 8,
            django_seconds=1 if q else 10,
            repetitions=1 if q else 3,
        )
        results["writers"] = data7
        reports.append(writers.report(data7))
    if "listeners" in args.only:
        data8 = many_listeners.run(seconds=1 if q else 10, objects=1000, repetitions=1 if q else 3)
        results["listeners"] = data8
        reports.append(many_listeners.report(data8))
    if "subscriptions" in args.only:
        data9 = subscriptions.run(
            saves=30 if q else 300,
            repetitions=2 if q else 7,
            n=20_000 if q else 1_000_000,
            objects=200 if q else 10_000,
            rate=20 if q else 50,
        )
        results["subscriptions"] = data9
        reports.append(subscriptions.report(data9))
    if "statistics" in args.only:
        data10 = drain.statistics_cost(k=500 if q else 10_000, repetitions=2 if q else 11)
        results["statistics"] = data10
        reports.append(drain.statistics_report(data10))
    results["targets"] = targets.evaluate(results)
    if results["targets"]:
        reports.append(targets.report(results["targets"]))
    results["seconds"] = time.perf_counter() - started
    text = "\n\n".join(reports)
    print(text)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out} ({results['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
