"""2. Backlog drain: K stored notifications processed by one listener (trivial callback)."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

from .harness import sql, table


def _fill(model: Any, k: int) -> None:
    from simple_history.utils import bulk_create_with_history

    for start in range(0, k, 5000):
        batch = [model(name=f"d{i}") for i in range(start, min(k, start + 5000))]
        bulk_create_with_history(batch, model, batch_size=5000)


def _reset() -> None:
    sql(
        "TRUNCATE pgpubsub_simplehistory_notification, pgpubsub_notification, bench_oursitem, "
        "bench_pubsubitem, bench_historicaloursitem, bench_historicalpubsubitem"
    )


def ours(k: int) -> dict[str, Any]:
    """Our worker's drain (the same code path as the worker's start-up sweep)."""
    from pgpubsub_simplehistory.draining import drain
    from testproject.bench.channels import OursChannel
    from testproject.bench.models import OursItem

    _reset()
    _fill(OursItem, k)
    assert sql("SELECT count(*) FROM pgpubsub_simplehistory_notification")[0][0] == k
    started = time.perf_counter()
    done = 0
    while True:
        n = drain([OursChannel], limit=1000).handled
        done += n
        if n == 0:
            break
    seconds = time.perf_counter() - started
    assert done == k, (done, k)
    return {"k": k, "seconds": seconds, "per_second": k / seconds}


def pgpubsub_live(k: int, cap_seconds: float) -> dict[str, Any]:
    """django-pgpubsub's live lockable path: one NOTIFY per stored row, claimed by payload."""
    from django.db import connection, transaction
    from pgpubsub.listen import listen_to_channels, process_notifications

    from testproject.bench.models import PubsubItem

    _reset()
    wrapper = listen_to_channels(["testproject.bench.channels.PubsubChannel"])
    with transaction.atomic():
        PubsubItem.objects.bulk_create([PubsubItem(name=f"p{i}") for i in range(k)])
    return _pgpubsub_drain(wrapper, k, cap_seconds, process_notifications, connection)


def pgpubsub_recover(k: int, cap_seconds: float) -> dict[str, Any]:
    """django-pgpubsub's --recover path: one empty NOTIFY, then every stored row."""
    from django.db import connection
    from pgpubsub import process_stored_notifications
    from pgpubsub.listen import listen_to_channels, process_notifications

    from testproject.bench.models import PubsubItem

    _reset()
    PubsubItem.objects.bulk_create([PubsubItem(name=f"p{i}") for i in range(k)])
    wrapper = listen_to_channels(["testproject.bench.channels.PubsubChannel"])
    process_stored_notifications(["testproject.bench.channels.PubsubChannel"])
    return _pgpubsub_drain(wrapper, k, cap_seconds, process_notifications, connection)


def _pgpubsub_drain(
    wrapper: Any, k: int, cap_seconds: float, process: Any, connection: Any
) -> dict[str, Any]:
    started = time.perf_counter()
    remaining = k
    while remaining and time.perf_counter() - started < cap_seconds:
        process(wrapper)
        remaining = sql("SELECT count(*) FROM pgpubsub_notification")[0][0]
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("UNLISTEN *")
    wrapper.stop()
    done = k - remaining
    return {
        "k": k,
        "seconds": seconds,
        "processed": done,
        "per_second": done / seconds if seconds else 0.0,
        "capped": remaining > 0,
    }


def run(ks: list[int], pgpubsub_ks: list[int], cap_seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {"ours": [], "pgpubsub_live": [], "pgpubsub_recover": []}
    for k in ks:
        results["ours"].append(ours(k))
    for k in pgpubsub_ks:
        results["pgpubsub_live"].append(pgpubsub_live(k, cap_seconds))
        results["pgpubsub_recover"].append(pgpubsub_recover(k, cap_seconds))
    for name in results:
        rows = results[name]
        for a, b in itertools.pairwise(rows):
            if not (a.get("capped") or b.get("capped")):
                b["growth_exponent_from_previous"] = math.log(
                    b["seconds"] / a["seconds"]
                ) / math.log(b["k"] / a["k"])
    return results


def report(results: dict[str, Any]) -> str:
    rows = []
    for name, runs in results.items():
        for r in runs:
            rows.append(
                [
                    name,
                    r["k"],
                    r.get("processed", r["k"]),
                    r["seconds"],
                    r["per_second"],
                    r.get("growth_exponent_from_previous", "-"),
                    "yes" if r.get("capped") else "",
                ]
            )
    ours = {r["k"]: r for r in results["ours"]}
    live = {r["k"]: r for r in results["pgpubsub_live"]}
    lines = [
        "Backlog drain, one listener, trivial callback",
        table(
            ["path", "K", "processed", "seconds", "notifications/s", "growth exp.", "capped"],
            rows,
        ),
    ]
    for k in sorted(set(ours) & set(live)):
        if live[k]["per_second"]:
            lines.append(
                f"ours / pgpubsub live at K={k}: "
                f"{ours[k]['per_second'] / live[k]['per_second']:.1f}x"
            )
    ks = sorted(ours)
    if len(ks) >= 2:
        first, last = ours[ks[0]], ours[ks[-1]]
        lines.append(
            f"ours: cost per notification at K={ks[-1]} / at K={ks[0]}: "
            f"{(last['seconds'] / last['k']) / (first['seconds'] / first['k']):.2f}"
        )
    return "\n".join(lines)
