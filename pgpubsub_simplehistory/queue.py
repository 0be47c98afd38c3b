"""The queue: every statement on the stored-notification table, by name.

The statements are in ``sql/queries.sql``; the SQL functions they call and the history triggers
call (``enqueue_v1``, ``claim_v1``) are in ``sql/*.sql``, loaded by this app's migrations. A
function keeps its signature once released; a new signature is a new version (``_v2``), so that
triggers already migrated into applications keep working.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from django.db import connections, models

from ._rows import fetch_instances
from .models import Notification, State

_ENTRY = re.compile(r"(?:\n|^)-- ([a-z0-9_]+) --\n(?:-- .*\n)*", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """The named statements of ``sql/queries.sql``."""
    parts = _ENTRY.split(_read("queries.sql"))[1:]
    return {name: sql.strip() for name, sql in zip(parts[::2], parts[1::2], strict=True)}


def sql_function(name: str) -> str:
    """The ``CREATE FUNCTION`` statement of ``sql/<name>.sql`` (for migrations)."""
    return _read(f"{name}.sql")


def _read(name: str) -> str:
    return resources.files("pgpubsub_simplehistory").joinpath(f"sql/{name}").read_text("utf-8")


def _execute(using: str, name: str, params: dict[str, Any]) -> Any:
    cursor = connections[using].cursor()
    cursor.execute(queries()[name], params)
    return cursor


def claim(
    listen_names: Sequence[str], blocking: Sequence[str], batch: int, using: str
) -> list[Notification]:
    """Lock and return up to ``batch`` due notifications (call inside a transaction)."""
    params = {"listen_names": list(listen_names), "blocking": list(blocking), "batch": batch}
    return fetch_instances(Notification, queries()["claim"], params, using)


def delete_done(ids: Sequence[int], using: str) -> None:
    with _execute(using, "delete_done", {"ids": list(ids)}):
        pass


def lock_pending(notification_id: int, using: str) -> Notification | None:
    """Lock the notification again if it is still pending (inside a transaction)."""
    found = fetch_instances(Notification, queries()["lock_pending"], {"id": notification_id}, using)
    return found[0] if found else None


def settle_failure(
    notification: Notification,
    *,
    error: str,
    traceback: str,
    park: bool,
    delay: float,
    using: str,
) -> None:
    """Record a failed attempt on ``notification``: due again after ``delay`` seconds (on the
    database's clock), or parked. Updates the instance."""
    notification.attempts += 1
    notification.last_error = error[:10_000]
    notification.last_traceback = traceback[:50_000]
    notification.state = str(State.PARKED if park else State.PENDING)
    params = {
        "id": notification.pk,
        "attempts": notification.attempts,
        "error": notification.last_error,
        "traceback": notification.last_traceback,
        "state": notification.state,
        "delay": 0.0 if park else delay,
    }
    with _execute(using, "settle_failure", params) as cursor:
        row = cursor.fetchone()
    if row is not None:
        notification.available_at = row[0]


def parked(
    listen_names: Sequence[str] = (),
    models_: Sequence[str] = (),
    ids: Sequence[int] = (),
    using: str = "default",
) -> models.QuerySet[Notification]:
    """Parked notifications, optionally of some channels, models (``app.Model``) or ids."""
    queryset = Notification.objects.using(using).filter(state=State.PARKED)
    if listen_names:
        queryset = queryset.filter(listen_name__in=list(listen_names))
    if models_:
        queryset = queryset.filter(model__in=list(models_))
    if ids:
        queryset = queryset.filter(pk__in=list(ids))
    ordered: models.QuerySet[Notification] = queryset.order_by("pk")
    return ordered


def lock_parked_ids(queryset: models.QuerySet[Notification]) -> list[int]:
    """Lock the parked rows of ``queryset`` that no one else has locked; their ids."""
    return list(
        queryset.filter(state=State.PARKED)
        .select_for_update(skip_locked=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def make_pending(ids: Sequence[int], using: str) -> int:
    with _execute(using, "make_pending", {"ids": list(ids)}) as cursor:
        return int(cursor.rowcount)


def purge(ids: Sequence[int], using: str) -> int:
    with _execute(using, "purge", {"ids": list(ids)}) as cursor:
        return int(cursor.rowcount)


def channel_counts(using: str) -> list[tuple[str, int, int, Any]]:
    """``(listen_name, pending, parked, oldest pending created_at)`` per listen name."""
    with _execute(using, "channel_counts", {}) as cursor:
        return [(name, int(p), int(k), oldest) for name, p, k, oldest in cursor.fetchall()]


def pending_by_migration(using: str) -> list[tuple[Any, ...]]:
    """``(listen_name, migration id, app, name, count, oldest)`` of the pending notifications."""
    with _execute(using, "pending_by_migration", {}) as cursor:
        return list(cursor.fetchall())
