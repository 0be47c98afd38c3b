"""The notification payload written by the history trigger, and its validation.

The payload is a pointer, never the row: ``{"app", "model", "history_model", "history_id",
"history_type", "object_id", "migration", "context"}`` plus ``"notification_id"`` in the NOTIFY of
lockable channels (the primary key of the stored notification, for logs and observers; listeners
claim stored notifications oldest first, the NOTIFY only wakes them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .exceptions import InvalidPayload

#: history_type values written by django-simple-history.
HISTORY_TYPES = frozenset({"+", "~", "-"})

_REQUIRED = ("app", "model", "history_model", "history_id", "history_type")


@dataclass(frozen=True)
class HistoryPayload:
    """A parsed, validated notification payload."""

    app: str
    model: str
    history_model: str
    history_id: Any
    history_type: str
    object_id: Any = None
    migration: int | None = None
    context: dict[str, Any] = field(default_factory=dict)
    notification_id: int | None = None

    @property
    def model_label(self) -> str:
        return f"{self.app}.{self.model}"

    @classmethod
    def parse(cls, raw: str | bytes | dict[str, Any]) -> HistoryPayload:
        """Parse a NOTIFY payload (text) or a stored payload (already decoded JSON).

        Raises:
            InvalidPayload: naming what is missing or malformed.
        """
        data: Any = raw
        if isinstance(raw, (str, bytes)):
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise InvalidPayload(f"payload is not JSON: {exc}: {_excerpt(raw)}") from None
        if not isinstance(data, dict):
            raise InvalidPayload(f"payload is not a JSON object: {_excerpt(raw)}")
        missing = [key for key in _REQUIRED if data.get(key) in (None, "")]
        if missing:
            raise InvalidPayload(
                f"payload is not a history notification (missing {', '.join(missing)}): "
                f"{_excerpt(raw)}"
            )
        history_type = data["history_type"]
        if history_type not in HISTORY_TYPES:
            raise InvalidPayload(f"unknown history_type {history_type!r} in payload")
        context = data.get("context") or {}
        if not isinstance(context, dict):
            raise InvalidPayload(f"payload context is not an object: {context!r}")
        migration = data.get("migration")
        notification_id = data.get("notification_id")
        if migration is not None and not isinstance(migration, int):
            raise InvalidPayload(f"payload migration is not an integer: {migration!r}")
        if notification_id is not None and not isinstance(notification_id, int):
            raise InvalidPayload(f"payload notification_id is not an integer: {notification_id!r}")
        return cls(
            app=str(data["app"]),
            model=str(data["model"]),
            history_model=str(data["history_model"]),
            history_id=data["history_id"],
            history_type=history_type,
            object_id=data.get("object_id"),
            migration=migration,
            context=context,
            notification_id=notification_id,
        )


def _excerpt(raw: object, limit: int = 200) -> str:
    text = raw if isinstance(raw, str) else repr(raw)
    return text if len(text) <= limit else text[:limit] + "..."
