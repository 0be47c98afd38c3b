"""What a notification points at (``HistoryPointer``), from a NOTIFY payload or a stored row.

The payload is a pointer, never the row: ``{"app", "model", "history_model", "history_id",
"history_type", "object_id", "migration_id_at_change", "context"}`` (plus ``"notification_id"``
from a lockable channel). Anyone who can connect can NOTIFY anything on a channel, so parsing
never raises anything but ``InvalidPayload``, whatever the text: not JSON, JSON of another shape,
deeply nested JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .exceptions import InvalidPayload
from .registry import HISTORY_TYPES

if TYPE_CHECKING:
    from .models import Notification

_TEXT = ("app", "model", "history_model")
#: NOTIFY payloads are below 8000 bytes; anything longer is not ours.
_MAX_LENGTH = 8000


@dataclass(frozen=True)
class HistoryPointer:
    """Which history record a notification points at, and what was recorded with it."""

    model: str  # app_label.ModelName at change time
    history_model: str  # app_label.HistoricalModelName
    history_id: Any
    history_type: str
    object_id: Any = None
    migration_id_at_change: int | None = None
    context: dict[str, Any] = field(default_factory=dict)
    notification_id: int | None = None

    @property
    def app(self) -> str:
        return self.model.partition(".")[0]

    @classmethod
    def of_notification(cls, notification: Notification) -> HistoryPointer:
        """The pointer of a stored notification (its row is already typed)."""
        return cls(
            model=notification.model,
            history_model=notification.history_model,
            history_id=notification.history_id,
            history_type=notification.history_type,
            object_id=notification.object_id,
            migration_id_at_change=notification.migration_id_at_change,
            context=notification.context if isinstance(notification.context, dict) else {},
            notification_id=notification.pk,
        )

    @classmethod
    def parse(cls, raw: str | bytes) -> HistoryPointer:
        """Parse a NOTIFY payload.

        Raises:
            InvalidPayload: naming what is missing or malformed (and nothing else).
        """
        try:
            return cls._parse(raw)
        except InvalidPayload:
            raise
        except Exception as exc:  # whatever odd input reaches: it is not ours
            raise InvalidPayload(
                f"payload is not a history notification ({type(exc).__name__}): {_excerpt(raw)}"
            ) from None

    @classmethod
    def _parse(cls, raw: str | bytes) -> HistoryPointer:
        if len(raw) > _MAX_LENGTH:
            raise InvalidPayload(f"payload of {len(raw)} bytes is not a history notification")
        try:
            data = json.loads(raw)
        except RecursionError:
            raise InvalidPayload(f"payload is nested too deeply: {_excerpt(raw)}") from None
        except ValueError as exc:
            raise InvalidPayload(f"payload is not JSON: {exc}: {_excerpt(raw)}") from None
        if not isinstance(data, dict):
            raise InvalidPayload(f"payload is not a JSON object: {_excerpt(raw)}")
        missing = [
            key
            for key in (*_TEXT, "history_id", "history_type")
            if data.get(key) is None or data.get(key) == ""
        ]
        if missing:
            raise InvalidPayload(
                f"payload is not a history notification (missing {', '.join(missing)}): "
                f"{_excerpt(raw)}"
            )
        for key in _TEXT:
            if not isinstance(data[key], str):
                raise InvalidPayload(f"payload {key} is not a string: {_value(data[key])}")
        history_type = data["history_type"]
        if not isinstance(history_type, str) or history_type not in HISTORY_TYPES:
            raise InvalidPayload(f"unknown history_type {_value(history_type)} in payload")
        history_id = data["history_id"]
        if not isinstance(history_id, (str, int)) or isinstance(history_id, bool):
            raise InvalidPayload(f"payload history_id is not an id: {_value(history_id)}")
        object_id = data.get("object_id")
        if object_id is not None and (
            not isinstance(object_id, (str, int)) or isinstance(object_id, bool)
        ):
            raise InvalidPayload(f"payload object_id is not an id: {_value(object_id)}")
        context = data.get("context") or {}
        if not isinstance(context, dict):
            raise InvalidPayload(f"payload context is not an object: {_value(context)}")
        integers = {}
        for key in ("migration_id_at_change", "notification_id"):
            value = data.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidPayload(f"payload {key} is not an integer: {_value(value)}")
            integers[key] = value
        return cls(
            model=f"{data['app']}.{data['model']}",
            history_model=data["history_model"],
            history_id=history_id,
            history_type=history_type,
            object_id=object_id,
            migration_id_at_change=integers["migration_id_at_change"],
            context=context,
            notification_id=integers["notification_id"],
        )


def _excerpt(raw: str | bytes, limit: int = 200) -> str:
    """The start of a payload, for error messages."""
    text = raw if isinstance(raw, str) else repr(raw)
    return text if len(text) <= limit else text[:limit] + "..."


def _value(value: object, limit: int = 200) -> str:
    """A value of a payload, for error messages (its repr, which may recurse too deeply)."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."
