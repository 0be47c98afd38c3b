"""What a stored notification resolves to, side by side with its previous record (for the admin)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .exceptions import PgpubsubSimplehistoryError
from .history_models import object_attname
from .models import Notification
from .records import previous_record
from .resolution import resolve_stored, to_instance


@dataclass(frozen=True)
class FieldDiff:
    """One field of today's model: its value in the previous record, this one, and today."""

    name: str
    previous: Any
    record: Any
    current: Any
    changed: bool


@dataclass(frozen=True)
class Inspection:
    """A notification resolved as its listener would receive it (or why it cannot be)."""

    error: str | None = None
    history: list[tuple[str, Any]] = field(default_factory=list)
    fields: list[FieldDiff] = field(default_factory=list)
    has_previous: bool = False
    exists_today: bool = False


def inspect_notification(notification: Notification) -> Inspection:
    """Resolve ``notification`` under today's schema; never raises for unresolvable input.

    ``fields`` compares, for each concrete field of today's model, the previous historical record
    of the object, the notified record, and the live row (empty when it no longer exists).
    """
    using = notification._state.db or "default"
    try:
        change = resolve_stored(notification)
    except PgpubsubSimplehistoryError as exc:
        return Inspection(error=str(exc))
    model = change.channel.tracked_model()
    record = change.history
    if record.history_type == "~":  # resolve already loaded the previous record
        before, now = change.old, change.new
    else:
        previous = previous_record(record, object_attname(type(record), model), using)
        before = to_instance(previous, model, using) if previous is not None else None
        now = change.new if change.new is not None else change.old  # '-': the deleted state
    assert now is not None
    current = change.event.current()
    history = [
        ("history_id", record.pk),
        ("history_type", record.history_type),
        ("history_date", record.history_date),
        ("history_user", getattr(record, "history_user_id", None)),
        ("history_change_reason", getattr(record, "history_change_reason", None)),
        ("schema changed since", change.event.schema_changed),
    ]
    diffs = []
    for f in model._meta.concrete_fields:
        old = getattr(before, f.attname) if before is not None else None
        new = getattr(now, f.attname)
        diffs.append(
            FieldDiff(
                name=f.attname,
                previous=old,
                record=new,
                current=getattr(current, f.attname) if current is not None else None,
                changed=before is not None and old != new,
            )
        )
    return Inspection(
        history=history,
        fields=diffs,
        has_previous=before is not None,
        exists_today=current is not None,
    )
