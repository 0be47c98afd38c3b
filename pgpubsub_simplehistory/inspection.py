"""What a stored notification resolves to, side by side with its previous record (for the admin).

The field values are the tracked object's data: the admin shows them only to a user who may
view the tracked model (``may_see_values``); others get the record's ids, type and date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.contrib.auth import get_permission_codename
from django.db import models

from . import registry
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
    #: The field values were left out: the user may not view the tracked model.
    values_hidden: bool = False
    #: ``app_label.ModelName`` of the tracked model (for the note when values are hidden).
    model_label: str = ""


#: The history types of django-simple-history, spelled out.
HISTORY_TYPE_NAMES = {"+": "insert", "~": "update", "-": "delete"}


def history_type_label(history_type: str) -> str:
    """``update (~)``: a history type spelled out, with its symbol."""
    name = HISTORY_TYPE_NAMES.get(history_type)
    return f"{name} ({history_type})" if name else repr(history_type)


def tracked_model_of(notification: Notification) -> type[models.Model] | None:
    """Today's model of the changed object: its channel's, else the stored label's (None when
    neither is known)."""
    channel = registry.channel_by_listen_name(notification.listen_name)
    if channel is not None:
        try:
            model: type[models.Model] = channel.tracked_model()
        except PgpubsubSimplehistoryError:
            pass
        else:
            return model
    try:
        return apps.get_model(notification.model)
    except (LookupError, ValueError):
        return None


def may_see_values(user: Any, notification: Notification) -> bool:
    """Whether ``user`` may see the tracked object's field values: the view or the change
    permission on the tracked model (as its own admin pages require). False when the model is
    unknown."""
    model = tracked_model_of(notification)
    if model is None:
        return False
    opts = model._meta
    return any(
        user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
        for action in ("view", "change")
    )


def inspect_notification(notification: Notification, *, values: bool = True) -> Inspection:
    """Resolve ``notification`` under today's schema; never raises for unresolvable input.

    ``fields`` compares, for each concrete field of today's model, the previous historical record
    of the object, the notified record, and the live row (empty when it no longer exists).
    With ``values=False`` only the record's ids, type and date are returned (``values_hidden``).
    """
    using = notification._state.db or "default"
    try:
        change = resolve_stored(notification)
    except PgpubsubSimplehistoryError as exc:
        return Inspection(error=str(exc))
    model = change.channel.tracked_model()
    record = change.history
    if not values:
        return Inspection(
            history=[
                ("history_id", record.pk),
                ("history_type", history_type_label(record.history_type)),
                ("history_date", record.history_date),
                ("object_id", notification.object_id),
            ],
            values_hidden=True,
            model_label=model._meta.label,
        )
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
        ("history_type", history_type_label(record.history_type)),
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
        model_label=model._meta.label,
    )
