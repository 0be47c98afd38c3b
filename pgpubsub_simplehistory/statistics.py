"""Statistics of settled notifications, for the admin dashboard and the worker's summary lines.

A worker counts in memory what it settles (outcome, and the lag from the change's insert to its
listeners' start, on the database's clock) per channel, and adds it to the minute table
(``models.Minute``) every ``FLUSH_SECONDS`` with one statement per channel and minute: the write
path pays nothing, the worker one upsert every few seconds (docs/performance.md has the
measured cost). Lags are kept as counts per bucket, so percentiles can be read back for any
period.
"""

from __future__ import annotations

import bisect
import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connections
from django.utils import timezone

from .settlement import Outcome, Settlement, logger

#: Upper bounds of the lag buckets, in milliseconds; a last bucket holds the longer ones.
LAG_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 60000)
#: Seconds between two flushes of a worker's counts to the minute table.
FLUSH_SECONDS = 10.0
#: Minutes are kept this long.
KEEP = datetime.timedelta(days=7)

_UPSERT = """
INSERT INTO pgpubsub_simplehistory_minute AS m
    (listen_name, minute, processed, retried, parked, failed, lag_buckets, lag_max_ms)
VALUES (%(listen_name)s, %(minute)s, %(processed)s, %(retried)s, %(parked)s, %(failed)s,
        %(lag_buckets)s, %(lag_max_ms)s)
ON CONFLICT (listen_name, minute) DO UPDATE SET
    processed = m.processed + EXCLUDED.processed,
    retried = m.retried + EXCLUDED.retried,
    parked = m.parked + EXCLUDED.parked,
    failed = m.failed + EXCLUDED.failed,
    lag_buckets = (
        SELECT array_agg(coalesce(a, 0) + coalesce(b, 0) ORDER BY i)
        FROM unnest(m.lag_buckets, EXCLUDED.lag_buckets) WITH ORDINALITY AS u(a, b, i)
    ),
    lag_max_ms = greatest(m.lag_max_ms, EXCLUDED.lag_max_ms)
"""

_PRUNE = "DELETE FROM pgpubsub_simplehistory_minute WHERE minute < %(before)s"


@dataclass
class Tally:
    """Counts of one channel over some time."""

    processed: int = 0
    retried: int = 0
    parked: int = 0
    failed: int = 0
    lag_buckets: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS_MS) + 1))
    lag_max_ms: float = 0.0

    def add(self, outcome: Outcome, lag: float | None) -> None:
        if outcome is Outcome.PROCESSED:
            self.processed += 1
        elif outcome is Outcome.RETRY:
            self.retried += 1
        elif outcome is Outcome.PARKED:
            self.parked += 1
        else:
            self.failed += 1
        if lag is not None and outcome is Outcome.PROCESSED:
            ms = max(lag * 1000, 0.0)
            self.lag_buckets[bisect.bisect_left(LAG_BUCKETS_MS, ms)] += 1
            self.lag_max_ms = max(self.lag_max_ms, ms)

    def merge(self, other: Tally) -> None:
        self.processed += other.processed
        self.retried += other.retried
        self.parked += other.parked
        self.failed += other.failed
        self.lag_buckets = [a + b for a, b in zip(self.lag_buckets, other.lag_buckets, strict=True)]
        self.lag_max_ms = max(self.lag_max_ms, other.lag_max_ms)

    @property
    def settled(self) -> int:
        return self.processed + self.retried + self.parked + self.failed

    def lag_percentile(self, q: float) -> float | None:
        """The upper bound (ms) of the bucket holding the q-th lag (q in 0..1); the maximum
        for the last bucket. None without lags."""
        return percentile(self.lag_buckets, q, self.lag_max_ms)


def percentile(buckets: Sequence[int], q: float, maximum: float) -> float | None:
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= rank and count:
            return float(LAG_BUCKETS_MS[index]) if index < len(LAG_BUCKETS_MS) else maximum
    return maximum


def _minute(now: datetime.datetime) -> datetime.datetime:
    return now.replace(second=0, microsecond=0)


class Statistics:
    """A worker's counts: what it settled since the last flush, and since the last summary."""

    def __init__(self, using: str = "default", flush_seconds: float = FLUSH_SECONDS) -> None:
        self.using = using
        self.flush_seconds = flush_seconds
        self._pending: dict[tuple[str, datetime.datetime], Tally] = {}
        self._summary: dict[Any, Tally] = {}
        self._next_flush = time.monotonic() + flush_seconds
        self._pruned_at = 0.0

    def record(self, settled: Settlement) -> None:
        """Count one settlement."""
        self.record_all([settled])

    def record_all(self, settlements: Sequence[Settlement]) -> None:
        """Count a batch's settlements (the hot path: dictionary updates; the minute and each
        channel's key are computed once per batch)."""
        minute = _minute(timezone.now())
        tallies: dict[Any, tuple[Tally, Tally]] = {}
        for settled in settlements:
            pair = tallies.get(settled.channel)
            if pair is None:
                key = (settled.channel.listen_safe_name(), minute)
                pair = tallies[settled.channel] = (
                    self._pending.setdefault(key, Tally()),
                    self._summary.setdefault(settled.channel, Tally()),
                )
            pair[0].add(settled.outcome, settled.lag)
            pair[1].add(settled.outcome, settled.lag)

    def count(self, channel: Any, outcome: Outcome, n: int) -> None:
        """Count ``n`` settlements of one outcome without lags (a subscription's batch)."""
        key = (channel.listen_safe_name(), _minute(timezone.now()))
        tally = self._pending.setdefault(key, Tally())
        summary = self._summary.setdefault(channel, Tally())
        for target in (tally, summary):
            if outcome is Outcome.PROCESSED:
                target.processed += n
            elif outcome is Outcome.PARKED:
                target.parked += n

    def flush_if_due(self) -> None:
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Add the counts to the minute table (and drop minutes older than a week, hourly). A
        database error keeps them for the next flush."""
        self._next_flush = time.monotonic() + self.flush_seconds
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            with connections[self.using].cursor() as cursor:
                for (listen_name, minute), tally in sorted(pending.items()):
                    cursor.execute(
                        _UPSERT,
                        {
                            "listen_name": listen_name,
                            "minute": minute,
                            "processed": tally.processed,
                            "retried": tally.retried,
                            "parked": tally.parked,
                            "failed": tally.failed,
                            "lag_buckets": tally.lag_buckets,
                            "lag_max_ms": tally.lag_max_ms,
                        },
                    )
                if time.monotonic() - self._pruned_at > 3600:
                    cursor.execute(_PRUNE, {"before": timezone.now() - KEEP})
                    self._pruned_at = time.monotonic()
        except DatabaseError as exc:
            logger.warning("could not store the statistics of settled notifications: %s", exc)
            for key, tally in pending.items():
                self._pending.setdefault(key, Tally()).merge(tally)
            raise

    def take_summary(self) -> dict[Any, Tally]:
        """The counts per channel since the last call."""
        summary, self._summary = self._summary, {}
        return summary


def lag_text(tally: Tally) -> str:
    p50, p95 = tally.lag_percentile(0.5), tally.lag_percentile(0.95)
    if p50 is None or p95 is None:
        return "no lag measured"
    return f"lag p50 <{_ms(p50)}, p95 <{_ms(p95)}"


def _ms(value: float) -> str:
    return f"{value / 1000:g} s" if value >= 1000 else f"{value:g} ms"
