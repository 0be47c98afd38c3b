"""5. Replay of N history records: records/s and peak memory (each N in a fresh process)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any

from .harness import ROOT, table


def measure(n: int) -> dict[str, Any]:
    """Runs inside a fresh process (``python -m benchmarks.replay N``)."""
    from simple_history.utils import bulk_create_with_history

    from pgpubsub_simplehistory import replay
    from testproject.bench.models import OursItem

    from .harness import sql

    sql("TRUNCATE bench_oursitem, bench_historicaloursitem, pgpubsub_simplehistory_notification")
    for start in range(0, n, 5000):
        batch = [OursItem(name=f"r{i}") for i in range(start, min(n, start + 5000))]
        bulk_create_with_history(batch, OursItem, batch_size=5000)
    sql("TRUNCATE pgpubsub_simplehistory_notification")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = replay(OursItem, select_all=True, listener="testproject.bench.listeners.ours_listener")
    seconds = time.perf_counter() - started
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.replayed == n and result.failed == 0
    return {
        "n": n,
        "seconds": seconds,
        "per_second": n / seconds,
        "peak_rss_kib": rss_peak,
        "rss_growth_kib": rss_peak - rss_before,
    }


def run(ns: list[int]) -> list[dict[str, Any]]:
    results = []
    for n in ns:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.replay", str(n)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def report(results: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["n"],
            r["seconds"],
            r["per_second"],
            r["peak_rss_kib"] / 1024,
            r["rss_growth_kib"] / 1024,
        ]
        for r in results
    ]
    return "Replay (one pass, one listener)\n" + table(
        ["records", "seconds", "records/s", "peak RSS MiB", "RSS growth during replay MiB"], rows
    )


if __name__ == "__main__":
    from .harness import setup

    setup(fresh=False)
    print(json.dumps(measure(int(sys.argv[1]))))
