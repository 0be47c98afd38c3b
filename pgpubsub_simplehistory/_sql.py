"""Quoting for the SQL this package renders itself (triggers, history-record queries)."""

from __future__ import annotations


def literal(value: str) -> str:
    """``value`` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def identifier(value: str) -> str:
    """``value`` as a quoted SQL identifier."""
    return '"' + value.replace('"', '""') + '"'
