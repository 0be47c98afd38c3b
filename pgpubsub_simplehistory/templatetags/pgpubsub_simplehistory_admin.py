"""Filters of this package's admin templates: times with seconds, ages, lags."""

from __future__ import annotations

import datetime
from typing import Any

from django import template
from django.utils import timezone

from ..dashboard import lag_label

register = template.Library()


@register.filter
def psh_value(value: Any) -> Any:
    """A field value for display: times with seconds in the current time zone, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, datetime.datetime):
        if timezone.is_aware(value):
            value = timezone.localtime(value)
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return value


@register.filter
def psh_age(seconds: float | None) -> str:
    """``45 s``, ``3 min 12 s``, ``2 h 5 min``, ``3 d 4 h``; '-' for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


@register.filter
def psh_lag(ms: float | None) -> str:
    """A lag percentile (a bucket's upper bound): ``<50 ms``."""
    return lag_label(ms)


@register.filter
def psh_oldest_age(row: Any, now: datetime.datetime) -> float | None:
    """The age in seconds of a dashboard row's oldest pending notification."""
    age: float | None = row.oldest_pending_age(now)
    return age
