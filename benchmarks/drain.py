"""2. Backlog drain: K stored notifications processed by one listener (trivial callback)."""

from __future__ import annotations

import itertools
import math
import threading
import time
from typing import Any

from .harness import sql, table


def fill_ours(k: int) -> None:
    """On emptied tables: ``k`` stored notifications of OursChannel as ``k`` creations leave
    them: ``k`` rows, their ``+`` history records and the queue rows ``enqueue_v1`` writes
    (sql/enqueue_v1.sql), each valid, so the worker resolves them. Filled by ``INSERT ...
    SELECT`` with the triggers off (``session_replication_role``): through the triggers, one
    transaction of many rows is superlinear (django-pgtrigger's ignore check opens a
    subtransaction per row) and 1,000,000 would take hours."""
    from django.db import transaction

    from testproject.bench.channels import OursChannel
    from testproject.bench.models import OursItem

    history = OursItem.history.model
    with transaction.atomic():
        sql("SET LOCAL session_replication_role = replica")
        sql(
            "INSERT INTO bench_oursitem (name, counter) "
            "SELECT 'd' || g, 0 FROM generate_series(1, %s) g",
            [k],
        )
        sql(
            "INSERT INTO bench_historicaloursitem (id, name, counter, history_date, history_type) "
            "SELECT id, name, counter, clock_timestamp(), '+' FROM bench_oursitem ORDER BY id"
        )
        sql(
            "INSERT INTO pgpubsub_simplehistory_notification (listen_name, model, history_model, "
            "history_id, history_type, object_id, migration_id_at_change, context, created_at, "
            "state, attempts, available_at, last_error, last_traceback, leased_by) "
            "SELECT %s, %s, %s, history_id::text, history_type, id::text, "
            "(SELECT max(id) FROM django_migrations WHERE app IN ('bench')), '{}', "
            "clock_timestamp(), 'pending', 0, now(), '', '', '' "
            "FROM bench_historicaloursitem ORDER BY history_id",
            [OursChannel.listen_safe_name(), OursItem._meta.label, history._meta.label],
        )


def settle_tables() -> None:
    """VACUUM ANALYZE the queue and the bench tables: every K starts from the same state (hint
    bits set, statistics current), not from a table one transaction just filled."""
    sql(
        "VACUUM (ANALYZE) pgpubsub_simplehistory_notification, bench_oursitem, "
        "bench_historicaloursitem"
    )


def _reset() -> None:
    sql(
        "TRUNCATE pgpubsub_simplehistory_notification, pgpubsub_notification, bench_oursitem, "
        "bench_pubsubitem, bench_historicaloursitem, bench_historicalpubsubitem"
    )


def drain_ours(
    max_count: int | None = None, cap_seconds: float | None = None, statistics: Any = None
) -> int:
    """Drain OursChannel in this process (the worker's sweep path) until nothing is due, or
    ``max_count`` were handled, or ``cap_seconds`` passed; how many were handled. With
    ``statistics`` (a ``Statistics``), settlements are counted and flushed as a worker does."""
    from pgpubsub_simplehistory.draining import drain
    from testproject.bench.channels import OursChannel

    deadline = None if cap_seconds is None else time.perf_counter() + cap_seconds
    done = 0
    while max_count is None or done < max_count:
        if deadline is not None and time.perf_counter() > deadline:
            break
        limit = 1000 if max_count is None else min(1000, max_count - done)
        n = drain([OursChannel], limit=limit, statistics=statistics).handled
        if statistics is not None:
            statistics.flush_if_due()
        done += n
        if n == 0:
            break
    if statistics is not None:
        statistics.flush()
    return done


def statistics_cost(k: int, repetitions: int) -> dict[str, Any]:
    """µs per notification of a drain of ``k`` stored, with the worker's statistics (counted per
    settlement, flushed to the minute table every ``FLUSH_SECONDS``, here every second so that
    a short drain pays its flushes) and without, interleaved. The end-to-end ratio of two drains
    varies by ±20% between repetitions on a small machine, more than the effect; so the "on"
    variant also times the statistics' own calls (counting and flushing), which is the cost
    without the noise of the rest of the drain."""
    from pgpubsub_simplehistory.statistics import Statistics

    from .harness import interleaved, ratios, summary

    own: list[float] = []

    class Timed(Statistics):
        spent = 0.0

        def _timed(self, call: Any, *args: Any) -> None:
            started = time.perf_counter()
            call(*args)
            self.spent += time.perf_counter() - started

        def record_all(self, settlements: Any) -> None:
            self._timed(super().record_all, settlements)

        def flush_if_due(self) -> None:
            self._timed(super().flush_if_due)

        def flush(self) -> None:
            self._timed(super().flush)

    def variant(on: bool) -> Any:
        def one() -> float:
            _reset()
            sql("TRUNCATE pgpubsub_simplehistory_minute")
            fill_ours(k)
            settle_tables()
            stats = Timed(flush_seconds=1.0) if on else None
            started = time.perf_counter()
            done = drain_ours(statistics=stats)
            seconds = time.perf_counter() - started
            assert done == k, (done, k)
            if stats is not None:
                own.append(stats.spent / k * 1e6)
                counted = sql("SELECT sum(processed) FROM pgpubsub_simplehistory_minute")[0][0]
                assert counted == k, (counted, k)
            return seconds / k * 1e6

        return one

    runs = interleaved({"off": variant(False), "on": variant(True)}, repetitions)
    _reset()
    return {
        "k": k,
        "us_per_notification": {name: summary(values) for name, values in runs.items()},
        "ratio_on_to_off": ratios(runs["on"], runs["off"]),
        "own_us_per_notification": summary(own),
        "own_share_of_off": summary([o / off for o, off in zip(own, runs["off"], strict=True)]),
        "repetitions": runs,
    }


def statistics_report(data: dict[str, Any]) -> str:
    us = data["us_per_notification"]
    ratio = data["ratio_on_to_off"]
    return (
        f"Statistics (admin dashboard, summaries) on the drain path, {data['k']:,} stored: "
        f"{us['off']['median']:.0f} µs per notification off, {us['on']['median']:.0f} µs on "
        f"(on ÷ off median {ratio['median']:.3f}, min {ratio['min']:.3f}, max {ratio['max']:.3f}); "
        f"the statistics' own calls {data['own_us_per_notification']['median']:.1f} µs per "
        f"notification, {data['own_share_of_off']['median']:.1%} of the drain without them"
    )


def ours(
    k: int, repetitions: int = 1, sample: int | None = None, cap_seconds: float | None = None
) -> dict[str, Any]:
    """Our worker's drain (the same code path as the worker's start-up sweep) of ``k`` stored,
    ``repetitions`` times from a fresh fill; seconds is the median. With ``sample`` (or
    ``cap_seconds``) only the oldest ``sample`` are drained (or as many as that time allows):
    the cost per notification while about ``k`` are stored, in bounded time."""
    times, counts = [], []
    for _ in range(repetitions):
        _reset()
        fill_ours(k)
        settle_tables()
        assert sql("SELECT count(*) FROM pgpubsub_simplehistory_notification")[0][0] == k
        started = time.perf_counter()
        done = drain_ours(sample, cap_seconds)
        times.append(time.perf_counter() - started)
        counts.append(done)
        assert done == min(k, sample or k) or cap_seconds is not None, (done, k)
    # the median repetition by cost per notification
    middle = sorted(range(repetitions), key=lambda i: times[i] / counts[i])[repetitions // 2]
    seconds, processed = times[middle], counts[middle]
    return {
        "k": k,
        "processed": processed,
        "seconds": seconds,
        "per_second": processed / seconds,
        "us_per_notification": seconds / processed * 1e6,
        "capped": processed < min(k, sample or k),  # the time cap ended it
        "repetitions": [{"seconds": t, "processed": c} for t, c in zip(times, counts, strict=True)],
    }


def warm_up() -> None:
    """One small drain first: the first drain of a process prepares its statements."""
    _reset()
    fill_ours(100)
    drain_ours()


def pgpubsub_live(k: int, cap_seconds: float) -> dict[str, Any]:
    """django-pgpubsub's live lockable path: one NOTIFY per stored row, claimed by payload."""
    from django.db import connection, transaction
    from pgpubsub.listen import listen_to_channels, process_notifications

    from testproject.bench.models import PubsubItem

    _reset()
    wrapper = listen_to_channels(["testproject.bench.channels.PubsubChannel"])
    with transaction.atomic():
        PubsubItem.objects.bulk_create([PubsubItem(name=f"p{i}") for i in range(k)])
    _settle_pgpubsub()
    return _pgpubsub_drain(wrapper, k, cap_seconds, process_notifications, connection)


def pgpubsub_recover(k: int, cap_seconds: float) -> dict[str, Any]:
    """django-pgpubsub's --recover path: one empty NOTIFY, then every stored row."""
    from django.db import connection
    from pgpubsub import process_stored_notifications
    from pgpubsub.listen import listen_to_channels, process_notifications

    from testproject.bench.models import PubsubItem

    _reset()
    PubsubItem.objects.bulk_create([PubsubItem(name=f"p{i}") for i in range(k)])
    _settle_pgpubsub()
    wrapper = listen_to_channels(["testproject.bench.channels.PubsubChannel"])
    process_stored_notifications(["testproject.bench.channels.PubsubChannel"])
    return _pgpubsub_drain(wrapper, k, cap_seconds, process_notifications, connection)


def _settle_pgpubsub() -> None:
    """As ``settle_tables`` for ours: django-pgpubsub's stored rows start from the same state."""
    sql("VACUUM (ANALYZE) pgpubsub_notification, bench_pubsubitem")


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


def ours_planned_on_empty(k: int, cap_seconds: float | None) -> dict[str, Any]:
    """Our drain of ``k`` stored by a worker session that planned its claim while the queue
    table was empty and analyzed, as autovacuum leaves a drained queue (each VACUUM or ANALYZE
    makes the session's next claim plan again): the session keeps that plan while the backlog
    arrives and is drained, the statistics still saying "empty" (autovacuum off for the table
    meanwhile). The worker is a thread, with its own session; this one fills the queue."""
    from django.db import connection

    _reset()
    sql("ALTER TABLE pgpubsub_simplehistory_notification SET (autovacuum_enabled = off)")
    settle_tables()
    planned, filled = threading.Event(), threading.Event()
    drained: dict[str, float] = {}
    failed: list[BaseException] = []

    def worker() -> None:
        try:
            drain_ours()  # nothing stored: the session plans its claim on the empty table
            planned.set()
            filled.wait()
            started = time.perf_counter()
            drained["processed"] = drain_ours(cap_seconds=cap_seconds)
            drained["seconds"] = time.perf_counter() - started
        except BaseException as exc:  # raised again by the calling thread
            failed.append(exc)
        finally:
            planned.set()
            connection.close()

    thread = threading.Thread(target=worker, name="bench-worker")
    thread.start()
    try:
        planned.wait()
        fill_ours(k)
    finally:
        filled.set()
        thread.join()
        sql("ALTER TABLE pgpubsub_simplehistory_notification RESET (autovacuum_enabled)")
    if failed:
        raise failed[0]
    processed, seconds = int(drained["processed"]), drained["seconds"]
    return {
        "k": k,
        "processed": processed,
        "seconds": seconds,
        "per_second": processed / seconds,
        "capped": processed < k,
    }


def run(
    ks: list[int],
    pgpubsub_ks: list[int],
    cap_seconds: float,
    small_repetitions: int = 1,
    sample: int | None = None,
    ours_cap_seconds: float | None = None,
) -> dict[str, Any]:
    """Ours at each K (K <= 10,000 ``small_repetitions`` times: they are short; above ``sample``
    only the oldest ``sample``, within ``ours_cap_seconds``), ours again at 10,000 (or the
    largest K below) with the claim planned on the empty queue (``ours_planned_on_empty``), then
    django-pgpubsub's live and --recover paths at each of ``pgpubsub_ks`` (each within
    ``cap_seconds``)."""
    results: dict[str, Any] = {
        "sample": sample,
        "ours_cap_seconds": ours_cap_seconds,
        "ours": [],
        "pgpubsub_live": [],
        "pgpubsub_recover": [],
    }
    warm_up()
    for k in ks:
        reps = small_repetitions if k <= 10_000 else 1
        results["ours"].append(ours(k, reps, sample, ours_cap_seconds))
    planned_k = min(ks[-1], 10_000)
    results["ours_planned_on_empty"] = ours_planned_on_empty(planned_k, ours_cap_seconds or 60.0)
    for k in pgpubsub_ks:
        results["pgpubsub_live"].append(pgpubsub_live(k, cap_seconds))
        results["pgpubsub_recover"].append(pgpubsub_recover(k, cap_seconds))
    _reset()  # leave no million rows behind for the next suite
    for name in ("ours", "pgpubsub_live", "pgpubsub_recover"):
        rows = results[name]
        for a, b in itertools.pairwise(rows):
            if all(r.get("processed", r["k"]) == r["k"] for r in (a, b)):  # both drained
                b["growth_exponent_from_previous"] = math.log(
                    b["seconds"] / a["seconds"]
                ) / math.log(b["k"] / a["k"])
    return results


def report(results: dict[str, Any]) -> str:
    rows = []
    for name in ("ours", "pgpubsub_live", "pgpubsub_recover"):
        for r in results[name]:
            rows.append(
                [
                    name,
                    r["k"],
                    r.get("processed", r["k"]),
                    r["seconds"],
                    r["per_second"],
                    r.get("growth_exponent_from_previous", "-"),
                    "time cap" if r.get("capped") else "",
                ]
            )
    lines = [
        "Backlog drain, one listener, trivial callback",
        table(
            [
                "path",
                "K stored",
                "drained",
                "seconds",
                "notifications/s",
                "growth exp.",
                "ended by",
            ],
            rows,
        ),
    ]
    ours = {r["k"]: r for r in results["ours"]}
    for path in ("pgpubsub_live", "pgpubsub_recover"):
        theirs = {r["k"]: r for r in results[path]}
        for k in sorted(set(ours) & set(theirs)):
            if theirs[k]["per_second"]:
                capped = " (theirs capped: its rate over the capped time)"
                lines.append(
                    f"ours ÷ {path.replace('_', ' ')} at K={k:,}: "
                    f"{ours[k]['per_second'] / theirs[k]['per_second']:.3f}x"
                    + (capped if theirs[k].get("capped") else "")
                )
    ks = sorted(ours)
    if len(ks) >= 2:
        first, last = ours[ks[0]], ours[ks[-1]]
        lines.append(
            f"ours: cost per notification at K={ks[-1]:,} ÷ at K={ks[0]:,}: "
            f"{first['per_second'] / last['per_second']:.3f}"
        )
    planned = results.get("ours_planned_on_empty")
    if planned:
        same = ours.get(planned["k"])
        versus = (
            f", {planned['per_second'] / same['per_second']:.3f}x the drain above" if same else ""
        )
        lines.append(
            f"ours, claim planned on the empty analyzed queue, then K={planned['k']:,} stored: "
            f"{planned['processed']:,} drained in {planned['seconds']:.2f} s, "
            f"{planned['per_second']:,.0f}/s{versus}" + (" (time cap)" if planned["capped"] else "")
        )
    if results.get("sample"):
        lines.append(
            f"(ours above K={results['sample']:,}: the oldest {results['sample']:,} drained, "
            "the cost per notification while about K are stored)"
        )
    return "\n".join(lines)
