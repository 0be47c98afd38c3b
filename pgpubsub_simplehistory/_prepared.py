"""Server-side prepared statements for the worker's history-record query.

Parsing and planning that query cost more than running it (docs/performance.md), so the worker
PREPAREs it once per connection and EXECUTEs it afterwards. A prepared statement belongs to the
database session: the registry is kept per driver connection, so a reconnect prepares again. After
DDL on the table (a migration while the worker runs) Postgres replans it by itself, except when
the result's columns changed ("cached plan must not change result type"): the caller then calls
:func:`forget` and runs the query unprepared; the next use prepares it anew under a new name.

``PGPUBSUB_SIMPLEHISTORY_PREPARED_STATEMENTS = False`` turns this off (``conf``).
"""

from __future__ import annotations

import hashlib
import itertools
import weakref
from collections.abc import Sequence
from typing import Any

from django.db import connections

_registry: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()
_generation = itertools.count()


def execute_sql(using: str, sql: str, param_types: Sequence[str]) -> str:
    """SQL that runs ``sql`` (``%s`` placeholders of ``param_types``) as a prepared statement on
    the current connection of ``using``; PREPAREs it first when this connection has not."""
    wrapper = connections[using]
    wrapper.ensure_connection()
    statements = _registry.setdefault(wrapper.connection, {})
    name = statements.get(sql)
    if name is None:
        digest = hashlib.sha1(sql.encode(), usedforsecurity=False).hexdigest()[:12]
        name = f"psh_{digest}_{next(_generation)}"
        numbered = _number_placeholders(sql)
        with wrapper.cursor() as cursor:
            cursor.execute(f"PREPARE {name} ({', '.join(param_types)}) AS {numbered}")
        statements[sql] = name
    return f"EXECUTE {name} ({', '.join(['%s'] * len(param_types))})"


def forget(using: str) -> None:
    """Stop using the statements prepared on the current connection of ``using``."""
    connection = connections[using].connection
    if connection is not None:
        _registry.pop(connection, None)


def prepared_names(using: str) -> list[str]:
    """Names of the statements in use on the current connection of ``using`` (tests)."""
    connection = connections[using].connection
    return sorted(_registry.get(connection, {}).values()) if connection is not None else []


def _number_placeholders(sql: str) -> str:
    parts = sql.split("%s")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], start=1)) + parts[-1]
