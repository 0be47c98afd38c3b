"""The queue: every statement on the stored-notification table, by name.

The statements are in ``sql/queries.sql``; the SQL functions they call and the history triggers
call (``enqueue_v1``, ``claim_v1``) are in ``sql/*.sql``, loaded by this app's migrations. A
function keeps its signature once released; a new signature is a new version (``_v2``), so that
triggers already migrated into applications keep working.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

from django.db import connections, models, transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Now

from . import _prepared
from ._rows import fetch_instances, fetch_tagged
from .models import Notification, State

_ENTRY = re.compile(r"(?:\n|^)-- ([a-z0-9_]+) --\n(?:-- .*\n)*", re.MULTILINE)
_NAMED = re.compile(r"%\((\w+)\)s")
#: The types of the claim's parameters, for its prepared statement.
_CLAIM_TYPES = {
    "wake": "text[]",
    "listen_names": "text[]",
    "blocking": "text[]",
    "batch": "integer",
    "worker": "text",
    "lease_seconds": "double precision",
}


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


#: How a reaped notification's ``last_error`` starts (followed by the worker and attempt).
DIED = "the worker running it ended without settling it (it died, was killed or lost its session): "


def claim(
    listen_names: Sequence[str],
    blocking: Sequence[str],
    batch: int,
    *,
    worker: str,
    lease_seconds: float,
    using: str,
    wake: Sequence[str] = (),
    prepared: bool = False,
) -> tuple[list[Notification], list[str]]:
    """Claim up to ``batch`` due notifications for ``worker``, oldest first, at most one per
    object: each one's attempt is counted and committed before this returns (call it outside a
    transaction). First, in the same statement, take the awake key (waking.py) of each name in
    ``wake``. Returns the notifications and the names whose awake key this session now holds.
    With ``prepared``, the statement is prepared once per connection (``_prepared``): parsing
    and planning it cost about as much as the server's work of a claim of one."""
    params: dict[str, Any] = {
        "wake": list(wake),
        "listen_names": list(listen_names),
        "blocking": list(blocking),
        "batch": batch,
        "worker": worker,
        "lease_seconds": lease_seconds,
    }
    if prepared:
        positional, names, types = _positional_claim()
        sql = _prepared.execute_sql(using, positional, types)
        fetched = fetch_tagged(Notification, sql, [params[n] for n in names], using, "woke")
    else:
        fetched = fetch_tagged(Notification, queries()["claim"], params, using, "woke")
    woke = list(fetched[0][0]) if fetched else []
    rows = sorted((row for _, row in fetched if row.pk is not None), key=lambda row: row.pk)
    return rows, woke


@cache
def _positional_claim() -> tuple[str, list[str], list[str]]:
    """The claim with ``%s`` placeholders for its prepared statement, its parameters' names in
    their order and their SQL types (computed once: the claim is the worker's hot path)."""
    sql = queries()["claim"]
    names = _NAMED.findall(sql)
    return _NAMED.sub("%s", sql), names, [_CLAIM_TYPES[name] for name in names]


def take(notification: Notification, worker: str, using: str) -> float | None:
    """Delete a claimed notification in the transaction that runs its listeners, if ``worker``
    still holds it: the seconds since the change was stored (None: another worker took it
    over, skip it)."""
    params = {"id": notification.pk, "worker": worker}
    with _execute(using, "take", params) as cursor:
        row = cursor.fetchone()
    return None if row is None else float(row[0])


def take_batch(ids: Sequence[int], worker: str, using: str) -> dict[int, float]:
    """Delete claimed notifications at the end of the transaction that ran their listeners, if
    ``worker`` still holds them: the seconds since each change was stored, by id (an id
    missing: another worker took it over; the caller rolls back)."""
    params = {"ids": list(ids), "worker": worker}
    with _execute(using, "take_batch", params) as cursor:
        return {int(row[0]): float(row[1]) for row in cursor.fetchall()}


def settle_failure(
    notification: Notification,
    *,
    worker: str,
    error: str,
    traceback: str,
    park: bool,
    delay: float,
    using: str,
) -> bool:
    """Record the failed attempt of a notification ``worker`` holds: due again after ``delay``
    seconds (on the database's clock), or parked. False when it no longer holds it."""
    notification.last_error = error[:10_000]
    notification.last_traceback = traceback[:50_000]
    notification.state = str(State.PARKED if park else State.PENDING)
    params = {
        "id": notification.pk,
        "worker": worker,
        "error": notification.last_error,
        "traceback": notification.last_traceback,
        "state": notification.state,
        "delay": 0.0 if park else delay,
    }
    with _execute(using, "settle_failure", params) as cursor:
        row = cursor.fetchone()
    if row is None:
        return False
    notification.attempts, notification.available_at = row
    return True


def release(ids: Sequence[int], worker: str, using: str) -> None:
    """Give back claimed notifications that ``worker`` has not started."""
    if ids:
        with _execute(using, "release", {"ids": list(ids), "worker": worker}):
            pass


def extend_leases(ids: Sequence[int], worker: str, lease_seconds: float, using: str) -> None:
    """Lease ``ids`` to ``worker`` for another ``lease_seconds``, where it still holds them (a
    batch transaction whose listener runs long)."""
    params = {"ids": list(ids), "worker": worker, "lease": lease_seconds}
    with _execute(using, "extend_leases", params):
        pass


def reap(
    listen_name: str, delay_or_park: Callable[[int], float | None], using: str
) -> list[Notification]:
    """End the leases of a channel that ran out (their worker died): a failed attempt each,
    due again after ``delay_or_park(attempts)`` seconds, or parked when it returns ``None``.
    Returns the reaped notifications."""
    with transaction.atomic(using=using):
        with _execute(using, "expired_leases", {"listen_name": listen_name}) as cursor:
            expired = cursor.fetchall()
        if not expired:
            return []
        params = {
            "ids": [row[0] for row in expired],
            "delays": [delay_or_park(int(row[1])) for row in expired],
            "error_prefix": DIED,
        }
        return fetch_instances(Notification, queries()["reap"], params, using)


def pending_of_object(notification: Notification, using: str) -> list[Notification]:
    """The later pending notifications of the same object on the same channel."""
    params = {
        "listen_name": notification.listen_name,
        "object_id": notification.object_id,
        "after": notification.pk,
    }
    return fetch_instances(Notification, queries()["pending_of_object"], params, using)


def park(ids: Sequence[int], error: str, using: str) -> list[int]:
    """Park pending notifications that can never be resolved; the ids parked."""
    with _execute(using, "park", {"ids": list(ids), "error": error[:10_000]}) as cursor:
        return [row[0] for row in cursor.fetchall()]


def listen_names(using: str) -> list[str]:
    """The listen names of every stored notification (cheap however long the queue)."""
    with _execute(using, "listen_names", {}) as cursor:
        return [row[0] for row in cursor.fetchall()]


def models_of(listen_name: str, using: str) -> list[tuple[str, str]]:
    """``(history model, model)`` labels of a listen name's pending notifications."""
    with _execute(using, "models_of", {"listen_name": listen_name}) as cursor:
        return [(str(h), str(m)) for h, m in cursor.fetchall()]


def park_history_model(listen_name: str, history_model: str, error: str, using: str) -> int:
    params = {"listen_name": listen_name, "history_model": history_model, "error": error}
    with _execute(using, "park_history_model", params) as cursor:
        return int(cursor.rowcount)


def contexts(
    listen_names: Sequence[str], history_model: str, history_ids: Sequence[Any], using: str
) -> dict[str, dict[str, Any]]:
    """The non-empty contexts of stored notifications of these records, by history id (text)."""
    params = {
        "listen_names": list(listen_names),
        "history_model": history_model,
        "history_ids": [str(i) for i in history_ids],
    }
    with _execute(using, "contexts", params) as cursor:
        return {
            str(hid): (ctx if isinstance(ctx, dict) else json.loads(ctx))
            for hid, ctx in cursor.fetchall()
        }


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


def channel_counts(using: str) -> list[tuple[str, int, int, Any, int]]:
    """``(listen_name, pending, parked, oldest pending created_at, claimed)`` per listen name."""
    with _execute(using, "channel_counts", {}) as cursor:
        return [
            (name, int(p), int(k), oldest, int(c)) for name, p, k, oldest, c in cursor.fetchall()
        ]


def pending_by_migration(using: str) -> list[tuple[Any, ...]]:
    """``(listen_name, migration id, app, name, count, oldest)`` of the pending notifications."""
    with _execute(using, "pending_by_migration", {}) as cursor:
        return list(cursor.fetchall())


# Reads for the admin and its dashboard (monitoring.py, dashboard.py, admin.py).


def overview(blocking: Sequence[str], using: str) -> list[tuple[Any, ...]]:
    """``(listen_name, pending, in flight, waiting for retry, parked, oldest pending created_at,
    held back)`` per listen name; held back on the channels ``blocking``."""
    with _execute(using, "queue_overview", {"blocking": list(blocking)}) as cursor:
        return [
            (name, int(p), int(f), int(w), int(k), oldest, int(h))
            for name, p, f, w, k, oldest, h in cursor.fetchall()
        ]


def held_back_of(
    ids: Sequence[int], blocking: Sequence[str], using: str
) -> list[tuple[int, int, str]]:
    """``(id, first earlier parked id, object_id)`` of those of ``ids`` that are held back."""
    if not ids:
        return []
    params = {"ids": list(ids), "blocking": list(blocking)}
    with _execute(using, "held_back_of", params) as cursor:
        return [(int(i), int(p), str(o)) for i, p, o in cursor.fetchall()]


def held_back_by_parked(
    blocking: Sequence[str], limit: int, using: str
) -> list[tuple[str, int, str, int]]:
    """``(listen_name, parked id, object_id, pending held back behind it)``, the most first."""
    params = {"blocking": list(blocking), "limit": limit}
    with _execute(using, "held_back_by_parked", params) as cursor:
        return [(str(n), int(p), str(o), int(c)) for n, p, o, c in cursor.fetchall()]


def held_back_counts(blocking: Sequence[str], using: str) -> dict[str, int]:
    """Pending notifications held back on the channels ``blocking``, per listen name."""
    with _execute(using, "held_back_counts", {"blocking": list(blocking)}) as cursor:
        return {str(name): int(count) for name, count in cursor.fetchall()}


def parked_errors(limit: int, using: str) -> list[tuple[str, str, int, int]]:
    """``(listen_name, first line of the error, count, latest id)``, the most frequent first."""
    with _execute(using, "parked_errors", {"limit": limit}) as cursor:
        return [(str(n), str(m), int(c), int(i)) for n, m, c, i in cursor.fetchall()]


def capped_count(queryset: models.QuerySet[Notification], cap: int) -> int:
    """How many rows ``queryset`` has, counting at most ``cap`` + 1 (a full count of a long
    queue reads every row)."""
    return int(queryset[: cap + 1].count())


def parked_in(queryset: models.QuerySet[Notification]) -> models.QuerySet[Notification]:
    """The parked notifications of ``queryset``."""
    parked: models.QuerySet[Notification] = queryset.filter(state=State.PARKED)
    return parked


def not_parked_in(queryset: models.QuerySet[Notification]) -> models.QuerySet[Notification]:
    """The notifications of ``queryset`` that are not parked (pending)."""
    pending: models.QuerySet[Notification] = queryset.exclude(state=State.PARKED)
    return pending


def in_flight(queryset: models.QuerySet[Notification]) -> models.QuerySet[Notification]:
    """The pending notifications of ``queryset`` a worker holds right now (leased)."""
    leased: models.QuerySet[Notification] = queryset.filter(
        state=State.PENDING, leased_until__isnull=False
    )
    return leased


def waiting_for_retry(queryset: models.QuerySet[Notification]) -> models.QuerySet[Notification]:
    """The pending notifications of ``queryset`` that failed before and are due later."""
    waiting: models.QuerySet[Notification] = queryset.filter(
        state=State.PENDING, leased_until__isnull=True, attempts__gt=0, available_at__gt=Now()
    )
    return waiting


def held_back(
    queryset: models.QuerySet[Notification], blocking: Sequence[str]
) -> models.QuerySet[Notification]:
    """The pending notifications of ``queryset`` behind an earlier parked notification of their
    object, on the channels ``blocking`` (whose parked notifications block their object)."""
    earlier_parked = Notification.objects.filter(
        listen_name=OuterRef("listen_name"),
        object_id=OuterRef("object_id"),
        id__lt=OuterRef("id"),
        state=State.PARKED,
    )
    held: models.QuerySet[Notification] = queryset.filter(
        state=State.PENDING, listen_name__in=list(blocking)
    ).filter(Exists(earlier_parked))
    return held


def store_record(
    *,
    listen_name: str,
    model: str,
    history_model: str,
    history_id: Any,
    history_type: str,
    object_id: Any,
    using: str,
    error: str = "",
    traceback: str = "",
    attempts: int = 0,
    park: bool = False,
    delay: float = 0.0,
) -> None:
    """Store a record a durable subscription did not deliver in place (see queries.sql)."""
    params = {
        "listen_name": listen_name,
        "model": model,
        "history_model": history_model,
        "history_id": str(history_id),
        "history_type": history_type,
        "object_id": str(object_id),
        "state": str(State.PARKED if park else State.PENDING),
        "attempts": attempts,
        "delay": delay,
        "error": error[:10_000],
        "traceback": traceback[:50_000],
    }
    with _execute(using, "store_record", params):
        pass


def stored_objects(listen_name: str, parked_blocks: bool, using: str) -> set[str]:
    """Objects of ``listen_name`` whose later changes must wait behind a stored notification."""
    params = {"listen_name": listen_name, "parked_blocks": parked_blocks}
    with _execute(using, "stored_objects", params) as cursor:
        return {str(row[0]) for row in cursor.fetchall()}


def stored_counts(listen_names: Sequence[str], using: str) -> dict[str, int]:
    """Per listen name: its stored notifications (pending or parked)."""
    with _execute(using, "stored_counts", {"listen_names": list(listen_names)}) as cursor:
        return {str(name): int(count) for name, count in cursor.fetchall()}


def flush(using: str) -> None:
    """Wait until every transaction this session committed is durable (one WAL flush)."""
    with _execute(using, "flush", {}):
        pass
