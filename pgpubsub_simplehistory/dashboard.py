"""The data of the admin dashboard: the queue per channel now, the last hour's throughput and
lag, the most frequent parked errors, and the parked notifications that hold back others.

A handful of grouped queries, whatever the length of the queue: one for the queue's counts
(``queue.overview``: two grouped scans), one for the parked errors, one for the parked
notifications that hold back others, one for the last hour's minutes (``models.Minute``, at
most 60 rows per channel), two for the durable subscriptions' positions and stored
notifications, and one per subscribed model on its history table (three index probes).
Nothing here loops over notifications. ``chart`` turns a series of minutes into the geometry of
a small SVG chart that the template draws (no script).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.utils import timezone

from . import conf, queue, registry
from .models import Minute
from .monitoring import Blocker, blockers, blocking_listen_names, channel_label
from .statistics import LAG_BUCKETS_MS, Tally
from .subscriptions import StreamState
from .subscriptions import states as subscription_states

#: Minutes shown by the charts (the last hour, the current minute included).
MINUTES = 60
#: Rows of the parked-errors and held-back tables.
TOP = 10


@dataclass(frozen=True)
class ChannelCounts:
    """The queue of one channel now (or of all: ``listen_name`` None)."""

    listen_name: str | None
    channel: str
    pending: int = 0
    in_flight: int = 0
    waiting: int = 0
    held_back: int = 0
    parked: int = 0
    oldest_pending: datetime.datetime | None = None
    #: False for a listen name in the queue that no declared channel has (renamed, removed).
    known: bool = True

    def oldest_pending_age(self, now: datetime.datetime) -> float | None:
        if self.oldest_pending is None:
            return None
        return max((now - self.oldest_pending).total_seconds(), 0.0)

    def cells(self) -> list[tuple[str, int]]:
        """The counts in the dashboard's order, each with the admin's state filter value."""
        return [
            ("pending", self.pending),
            ("in_flight", self.in_flight),
            ("retry", self.waiting),
            ("held_back", self.held_back),
            ("parked", self.parked),
        ]


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str
    #: SVG ``text-anchor``: the first and last time labels stay inside the chart.
    anchor: str = "end"


@dataclass(frozen=True)
class Chart:
    """Geometry of one chart, in SVG user units: processed per minute as bars (top), lag p50
    and p95 as lines on a logarithmic scale (bottom)."""

    width: int
    height: int
    bars: list[Bar]
    #: ``points`` attributes of polylines, one per run of minutes that have a lag.
    p50: list[str]
    p95: list[str]
    #: Where the lag strip starts and ends (y).
    lag_top: float
    lag_bottom: float
    bars_top: float
    bars_bottom: float
    left: float
    right: float
    processed_max: int
    lag_ticks: list[Tick]
    time_ticks: list[Tick]

    @property
    def label_x(self) -> float:
        """Where the y axes' labels end (they are right-aligned)."""
        return self.left - 4

    @property
    def time_y(self) -> float:
        return self.height - 4.0


@dataclass(frozen=True)
class Activity:
    """What the workers settled on one channel (or all) in the last hour, minute by minute."""

    listen_name: str | None
    channel: str
    minutes: list[datetime.datetime]
    tallies: list[Tally]
    total: Tally
    chart: Chart

    @property
    def p50(self) -> float | None:
        return self.total.lag_percentile(0.5)

    @property
    def p95(self) -> float | None:
        return self.total.lag_percentile(0.95)


@dataclass(frozen=True)
class ErrorGroup:
    """Parked notifications of one channel whose last error starts with the same line."""

    listen_name: str
    channel: str
    message: str
    count: int
    latest_id: int


@dataclass(frozen=True)
class Dashboard:
    now: datetime.datetime
    total: ChannelCounts
    #: The channels with something stored, or settled in the last hour.
    channels: list[ChannelCounts]
    overall: Activity
    activity: list[Activity]
    errors: list[ErrorGroup]
    blockers: list[Blocker]
    #: Lockable history channels are declared in this project.
    has_channels: bool
    #: Something was ever stored or settled (else the page explains how to start).
    ever_ran: bool
    #: Declared lockable channels with nothing stored and nothing settled in the last hour.
    idle: list[ChannelCounts] = field(default_factory=list)
    statistics_enabled: bool = True
    statistics_since: datetime.datetime | None = None
    notes: list[str] = field(default_factory=list)
    #: Every durable subscription, per model: position, lag, rate.
    subscriptions: list[StreamState] = field(default_factory=list)


def build(using: str = "default", now: datetime.datetime | None = None) -> Dashboard:
    """Read everything the dashboard shows."""
    now = now or timezone.now()
    lockable = [c for c in registry.channels() if c.lock_notifications]
    rows = {
        name: ChannelCounts(
            name,
            channel_label(name),
            pending,
            in_flight,
            waiting,
            held,
            parked,
            oldest,
            registry.channel_by_listen_name(name) is not None,
        )
        for name, pending, in_flight, waiting, parked, oldest, held in queue.overview(
            blocking_listen_names(), using
        )
    }
    for channel in lockable:
        name = channel.listen_safe_name()
        rows.setdefault(name, ChannelCounts(name, channel_label(name)))
    channels = sorted(rows.values(), key=lambda c: (not c.known, c.channel))
    oldest = [c.oldest_pending for c in channels if c.oldest_pending is not None]
    total = ChannelCounts(
        None,
        "All channels",
        sum(c.pending for c in channels),
        sum(c.in_flight for c in channels),
        sum(c.waiting for c in channels),
        sum(c.held_back for c in channels),
        sum(c.parked for c in channels),
        min(oldest) if oldest else None,
    )

    end = now.replace(second=0, microsecond=0)
    start = end - datetime.timedelta(minutes=MINUTES - 1)
    minutes = [start + datetime.timedelta(minutes=i) for i in range(MINUTES)]
    names = [c.listen_name for c in channels if c.listen_name is not None]
    per_channel: dict[str, list[Tally]] = {name: [Tally() for _ in minutes] for name in names}
    rows_seen = (
        Minute.objects.using(using)
        .filter(listen_name__in=names, minute__gte=start)
        .values_list(
            "listen_name",
            "minute",
            "processed",
            "retried",
            "parked",
            "failed",
            "lag_buckets",
            "lag_max_ms",
        )
        .order_by()
    )
    for name, minute, processed, retried, parked, failed, buckets, lag_max in rows_seen:
        index = int((minute - start).total_seconds() // 60)
        if 0 <= index < MINUTES:
            per_channel[name][index].merge(
                Tally(processed, retried, parked, failed, _padded(buckets), float(lag_max))
            )
    overall_tallies = [Tally() for _ in minutes]
    activity = []
    for name in names:
        tallies = per_channel[name]
        if not any(t.settled for t in tallies):
            continue
        for index, tally in enumerate(tallies):
            overall_tallies[index].merge(tally)
        activity.append(_activity(name, channel_label(name), minutes, tallies))
    overall = _activity(None, "All channels", minutes, overall_tallies)
    active = {a.listen_name for a in activity}
    idle = [c for c in channels if not (c.pending or c.parked or c.listen_name in active)]
    channels = [c for c in channels if c not in idle]

    errors = [
        ErrorGroup(name, channel_label(name), message, count, latest)
        for name, message, count, latest in queue.parked_errors(TOP, using)
    ]
    ever_ran = bool(total.pending or total.parked or activity) or (
        Minute.objects.using(using).filter(listen_name__in=names).exists()
    )
    notes = []
    if not conf.statistics():
        notes.append(
            "PGPUBSUB_SIMPLEHISTORY_STATISTICS is False: the workers keep no per-minute "
            "statistics, so the charts stay empty."
        )
    followed = subscription_states(using)
    return Dashboard(
        now=now,
        total=total,
        channels=channels,
        idle=idle,
        overall=overall,
        activity=activity,
        errors=errors,
        blockers=blockers(using, TOP) if total.held_back else [],
        has_channels=bool(lockable),
        ever_ran=ever_ran or any(f.position or f.behind for f in followed),
        statistics_enabled=conf.statistics(),
        statistics_since=start,
        notes=notes,
        subscriptions=followed,
    )


def _padded(buckets: Sequence[int]) -> list[int]:
    """A row's buckets, as many as this version has (a row written by another version)."""
    wanted = len(LAG_BUCKETS_MS) + 1
    values = [int(b) for b in buckets][:wanted]
    return values + [0] * (wanted - len(values))


def _activity(
    listen_name: str | None, label: str, minutes: list[datetime.datetime], tallies: list[Tally]
) -> Activity:
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    width = 960 if listen_name is None else 480  # drawn about that wide: legible labels
    return Activity(listen_name, label, minutes, tallies, total, chart(minutes, tallies, width))


def lag_label(ms: float | None) -> str:
    """``<50 ms``, ``<2 s`` (the bucket's upper bound), ``-`` without lags."""
    if ms is None:
        return "-"
    if ms >= 60_000:
        return f"<{ms / 60_000:g} min"
    if ms >= 1000:
        return f"<{ms / 1000:g} s"
    return f"<{ms:g} ms"


# Geometry of a chart: bars of processed per minute over a strip of lag lines.
_LEFT, _RIGHT, _TOP, _BARS, _GAP, _LAG, _BOTTOM = 52.0, 8.0, 8.0, 72.0, 14.0, 64.0, 18.0
_LAG_FLOOR_MS, _LAG_CEILING_MS = 1.0, 100_000.0


def chart(minutes: list[datetime.datetime], tallies: list[Tally], width: int = 720) -> Chart:
    """The geometry of the chart of ``tallies`` (one per minute of ``minutes``)."""
    slot = (width - _LEFT - _RIGHT) / max(len(minutes), 1)
    bars_top, bars_bottom = _TOP, _TOP + _BARS
    lag_top = bars_bottom + _GAP
    lag_bottom = lag_top + _LAG
    height = int(lag_bottom + _BOTTOM)
    processed_max = max((t.processed for t in tallies), default=0)
    scale = _BARS / processed_max if processed_max else 0.0
    bars = []
    p50_runs: list[list[str]] = [[]]
    p95_runs: list[list[str]] = [[]]
    for index, (minute, tally) in enumerate(zip(minutes, tallies, strict=True)):
        x = _LEFT + index * slot
        p50, p95 = tally.lag_percentile(0.5), tally.lag_percentile(0.95)
        title = (
            f"{timezone.localtime(minute):%H:%M}: {tally.processed} processed, "
            f"{tally.retried} retried, {tally.parked} parked; "
            f"lag p50 {lag_label(p50)}, p95 {lag_label(p95)}"
        )
        h = tally.processed * scale
        if tally.settled:
            bars.append(
                Bar(
                    round(x + slot * 0.1, 2),
                    round(bars_bottom - max(h, 1.0 if tally.processed else 0.0), 2),
                    round(slot * 0.8, 2),
                    round(max(h, 1.0 if tally.processed else 0.0), 2),
                    title,
                )
            )
        centre = round(x + slot / 2, 2)
        for value, runs in ((p50, p50_runs), (p95, p95_runs)):
            if value is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(f"{centre},{_lag_y(value, lag_top, lag_bottom)}")
    lag_ticks = [
        Tick(_lag_y(ms, lag_top, lag_bottom), label)
        for ms, label in (
            (1, "1 ms"),
            (10, "10 ms"),
            (100, "100 ms"),
            (1000, "1 s"),
            (10_000, "10 s"),
        )
    ]
    time_ticks = []
    for index, anchor in ((0, "start"), (len(minutes) // 2, "middle"), (len(minutes) - 1, "end")):
        if 0 <= index < len(minutes):
            x = _LEFT + index * slot + {"start": 0.0, "middle": slot / 2, "end": slot}[anchor]
            label = f"{timezone.localtime(minutes[index]):%H:%M}"
            time_ticks.append(Tick(round(x, 2), label, anchor))
    return Chart(
        width=width,
        height=height,
        bars=bars,
        p50=[" ".join(run) for run in p50_runs if run],
        p95=[" ".join(run) for run in p95_runs if run],
        lag_top=lag_top,
        lag_bottom=lag_bottom,
        bars_top=bars_top,
        bars_bottom=bars_bottom,
        left=_LEFT,
        right=width - _RIGHT,
        processed_max=processed_max,
        lag_ticks=lag_ticks,
        time_ticks=time_ticks,
    )


def _lag_y(ms: float, top: float, bottom: float) -> float:
    ms = min(max(ms, _LAG_FLOOR_MS), _LAG_CEILING_MS)
    span = math.log10(_LAG_CEILING_MS) - math.log10(_LAG_FLOOR_MS)
    fraction = (math.log10(ms) - math.log10(_LAG_FLOOR_MS)) / span
    return round(bottom - fraction * (bottom - top), 2)
