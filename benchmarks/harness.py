"""Set-up and statistics shared by the benchmarks: a fresh database, interleaved repetitions."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "psh_bench"
SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "shared_buffers",
    "wal_level",
    "max_connections",
)


def setup(fresh: bool = True) -> str:
    """Start (or use) Postgres, create a fresh benchmark database, set Django up, migrate."""
    sys.path.insert(0, str(ROOT))
    from testproject.pgembed import ensure_database_url, fresh_database

    url = ensure_database_url()
    if fresh:
        url = fresh_database(url, BENCH_DB)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    # django-pgpubsub picks its driver from this variable; follow the one Django uses.
    if importlib.util.find_spec("psycopg") is not None:
        os.environ.setdefault("PGPUBSUB_USE_PSYCOPG_V3", "True")
    import django

    django.setup()
    if fresh:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    return url


def sql(query: str, params: Any = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def environment() -> dict[str, Any]:
    versions = {}
    for dist in ("Django", "django-simple-history", "django-pgpubsub", "django-pgtrigger",
                 "psycopg2-binary", "psycopg", "pgpubsub-simplehistory"):  # fmt: skip
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    settings = {name: sql(f"SHOW {name}")[0][0] for name in SETTINGS}
    from django.db import connection

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "driver": connection.Database.__name__,
        "versions": versions,
        "postgres": settings,
        "database_url_host": urlparse(os.environ["DATABASE_URL"]).hostname or "unix socket",
    }


def summary(values: list[float]) -> dict[str, float]:
    """min, median, max (NaN for none: a run that failed shows as NaN, its target as not met)."""
    if not values:
        return {"min": math.nan, "median": math.nan, "max": math.nan}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def ratios(a: list[float], b: list[float]) -> dict[str, float]:
    """Ratios a[i] / b[i] computed pair by pair (same repetition), summarised."""
    return summary([x / y for x, y in zip(a, b, strict=True)])


def paired(rows: list[dict[str, Any]], key: str, field: str, a: str, b: str) -> dict[str, float]:
    """Ratios of ``key`` between the rows whose ``field`` is ``a`` and those whose ``field`` is
    ``b``, paired by ``repetition``, summarised (repetitions missing either are left out)."""
    by_rep: dict[Any, dict[str, float]] = {}
    for r in rows:
        if key in r and r.get(field) in (a, b):
            by_rep.setdefault(r["repetition"], {})[r[field]] = r[key]
    pairs = [v for v in by_rep.values() if len(v) == 2 and v[b]]
    return summary([v[a] / v[b] for v in pairs])


def interleaved(
    variants: dict[str, Callable[[], float]], repetitions: int
) -> dict[str, list[float]]:
    """Run every variant once per repetition, rotating the order (A B C, B C A, ...)."""
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repetitions):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            results[name].append(variants[name]())
    return results


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)
