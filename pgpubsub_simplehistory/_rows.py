"""Model instances from a hand-written SELECT, without ``RawQuerySet``'s per-query set-up.

The worker runs a few such queries per batch (the claim, the historical records). The column
mapping and the field converters are computed once per (model, result columns, database) and
reused; rows become instances through ``Model.from_db`` with the fields' database converters
applied, as ``RawQuerySet`` does: columns the model does not know are ignored, model fields
missing from the result are deferred. docs/performance.md has what that saves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connections, models

M = TypeVar("M", bound=models.Model)

_Converter = Callable[[Any, Any, Any], Any]
# (result column indexes, their attnames, [(position, expression, converters)])
_Plan = tuple[list[int], list[str], list[tuple[int, Any, list[_Converter]]]]

_plans: dict[tuple[type[models.Model], tuple[str, ...], str], _Plan] = {}


def fetch_instances(model: type[M], sql: str, params: Any, using: str) -> list[M]:
    """Run ``sql`` on database ``using`` and build one ``model`` instance per row."""
    return [instance for _, instance in _fetch(model, sql, params, using, None)]


def fetch_tagged(
    model: type[M], sql: str, params: Any, using: str, tag: str
) -> list[tuple[Any, M]]:
    """Like :func:`fetch_instances`, each instance paired with the value of column ``tag``."""
    return _fetch(model, sql, params, using, tag)


def _fetch(
    model: type[M], sql: str, params: Any, using: str, tag: str | None
) -> list[tuple[Any, M]]:
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = tuple(str(column[0]) for column in cursor.description)
        rows = cursor.fetchall()
    if not rows:
        return []
    key = (model, columns, using)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _plan(model, columns, connection)
    indexes, attnames, converters = plan
    tag_index = columns.index(tag) if tag is not None else None
    fetched = []
    for row in rows:
        values = [row[i] for i in indexes]
        for position, expression, functions in converters:
            value = values[position]
            for function in functions:
                value = function(value, expression, connection)
            values[position] = value
        tagged = row[tag_index] if tag_index is not None else None
        fetched.append((tagged, model.from_db(using, attnames, values)))
    return fetched


def _plan(model: type[models.Model], columns: tuple[str, ...], connection: Any) -> _Plan:
    # from_db takes the values in the order of the model's fields, not of the result's columns.
    position_of = {name: i for i, name in enumerate(columns)}
    fields = [field for field in model._meta.concrete_fields if str(field.column) in position_of]
    indexes = [position_of[str(field.column)] for field in fields]
    converters = []
    for position, field in enumerate(fields):
        expression = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(expression) + field.get_db_converters(
            connection
        )
        if functions:
            converters.append((position, expression, functions))
    return indexes, [field.attname for field in fields], converters
