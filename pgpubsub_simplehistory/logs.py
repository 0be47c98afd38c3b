"""``JsonFormatter``: one JSON object per log line, with the structured fields of notifications."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

#: Fields this package attaches (``extra=``) to the lines about notifications.
STRUCTURED_FIELDS = (
    "channel",
    "model",
    "history_id",
    "history_type",
    "notification_id",
    "attempt",
    "duration_ms",
    "lag_ms",
    "outcome",
)


class JsonFormatter(logging.Formatter):
    """Format records as JSON: time, level, logger, message, the notification fields, exception.

    Use it in ``LOGGING`` (``"()": "pgpubsub_simplehistory.JsonFormatter"``) or with
    ``manage.py listen --logformat json``. Fields a record does not carry are left out.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in STRUCTURED_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)
