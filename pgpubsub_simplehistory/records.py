"""Loading history records: the SQL on history tables, prepared statements, row mapping.

A record is a row of a ``HistoricalX`` table. The worker loads a batch's records with, for each
update, the object's record before it, in one query per channel (a statement prepared once per
connection); replay and the admin load through the same functions.

History order: for numbered history ids (the default) the order of the ids, which is the order
in which an object's changes committed (``trigger.HistoryOrder`` numbers them under the object's
row lock); for UUID history ids, ``(history_date, history_id)``. "Before" is the same object's
latest record below a record in that order.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections, models

from . import _prepared
from ._rows import fetch_instances, fetch_tagged
from ._sql import identifier
from .history_models import numbered


@dataclass(frozen=True)
class LoadedRecords:
    """History records loaded together (see :func:`load_records`)."""

    #: The records, by primary key.
    records: dict[Any, Any]
    #: For each update among them, by its primary key: the object's record before it (``None``
    #: when there is none).
    previous: dict[Any, Any]


def load_records(
    history_model: type[models.Model],
    object_attname: str,
    history_ids: Sequence[Any],
    using: str = "default",
    *,
    prepared: bool = False,
) -> LoadedRecords:
    """The records of ``history_model`` with these ids (malformed or missing ones are absent)
    and, for each update among them, the object's record before it: one query (a prepared
    statement of the connection when ``prepared``, see ``_prepared``).

    ``object_attname`` is the attribute of a record holding the object's primary key.
    """
    pk = history_model._meta.pk
    assert pk is not None
    ids = []
    for value in history_ids:
        try:
            ids.append(pk.to_python(value))
        except ValidationError:
            continue
    if not ids:
        return LoadedRecords({}, {})
    single = len(ids) == 1
    sql = _records_sql(history_model, object_attname, single)
    if prepared:
        pk_type = _pk_db_type(history_model, using)
        sql = _prepared.execute_sql(using, sql, [pk_type if single else f"{pk_type}[]"])
    rows: list[tuple[Any, Any]] = fetch_tagged(
        history_model, sql, [ids[0] if single else ids], using, _PREVIOUS_OF
    )
    records = {record.pk: record for previous_of, record in rows if previous_of is None}
    previous: dict[Any, Any] = {
        key: None for key, record in records.items() if record.history_type == "~"
    }
    for previous_of, record in rows:
        if previous_of is not None:
            previous[pk.to_python(previous_of)] = record
    return LoadedRecords(records, previous)


def previous_record(record: Any, object_attname: str, using: str = "default") -> Any:
    """The same object's record just before ``record`` (None when there is none).

    Unlike simple-history's ``prev_record`` this does not skip records that share a timestamp.
    One indexed query (simple-history indexes the object column), compared as a row value.
    """
    history_model: type[models.Model] = type(record)
    params = [getattr(record, object_attname), record.pk]
    if not numbered(history_model):
        params.insert(1, record.history_date)
    found = fetch_instances(
        history_model, _previous_sql(history_model, object_attname), params, using
    )
    return found[0] if found else None


# -- a numbered history table read as a log (durable subscriptions) ---------------------------


def _log(history_model: type[models.Model], using: str) -> models.QuerySet[Any]:
    records: models.QuerySet[Any] = history_model._default_manager.using(using)
    return records


def records_between(
    history_model: type[models.Model], after: int, up_to: int, limit: int, using: str = "default"
) -> list[Any]:
    """The first ``limit`` records with ``after < history id <= up_to``, in history id order."""
    return list(
        _log(history_model, using).filter(pk__gt=after, pk__lte=up_to).order_by("pk")[:limit]
    )


def has_records_between(
    history_model: type[models.Model], after: int, up_to: int, using: str = "default"
) -> bool:
    return up_to > after and _log(history_model, using).filter(pk__gt=after, pk__lte=up_to).exists()


def count_between(
    history_model: type[models.Model], after: int, up_to: int, using: str = "default"
) -> int:
    if up_to <= after:
        return 0
    return int(_log(history_model, using).filter(pk__gt=after, pk__lte=up_to).count())


def last_history_id(history_model: type[models.Model], using: str = "default") -> int:
    """The highest history id (0 for an empty table)."""
    found = _log(history_model, using).aggregate(last=models.Max("pk"))["last"]
    return int(found or 0)


def first_history_id_at_or_after(
    history_model: type[models.Model], when: Any, using: str = "default"
) -> int | None:
    """The lowest history id among the records with ``history_date >= when``."""
    found = _log(history_model, using).filter(history_date__gte=when).order_by("pk")
    first = found.values_list("pk", flat=True).first()
    return None if first is None else int(first)


def records_above(
    history_model: type[models.Model], position: int, using: str = "default"
) -> tuple[int, int, Any]:
    """For a durable subscription at ``position``: how many records are above it, the last
    history id, and the ``history_date`` of the first record above it (``None`` when there is
    none). One round trip, three index probes."""
    table = identifier(history_model._meta.db_table)
    pk = identifier(str(history_model._meta.pk.column))
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT count(*) FROM {table} WHERE {pk} > %(at)s), "
            f"(SELECT max({pk}) FROM {table}), "
            f"(SELECT history_date FROM {table} WHERE {pk} > %(at)s ORDER BY {pk} LIMIT 1)",
            {"at": position},
        )
        behind, last, first = cursor.fetchone()
    return int(behind), int(last or 0), first


def forget_prepared(using: str) -> None:
    """Stop using the statements prepared on the current connection (after a failure: a
    migration may have changed a history table's columns)."""
    _prepared.forget(using)


_PREVIOUS_OF = "psh_previous_of"


@functools.cache
def _pk_db_type(history_model: type[models.Model], using: str) -> str:
    """The SQL type of the history model's primary key (``rel_db_type`` builds a field)."""
    pk = history_model._meta.pk
    assert pk is not None
    return str(pk.rel_db_type(connections[using]))


@functools.cache
def _records_sql(history_model: type[models.Model], attname: str, single: bool) -> str:
    """The records with the id ``%s`` (``single``) or whose ids are in the array ``%s``, then
    each update's previous record tagged with its id.

    In the array form each id is looked up on its own (a lateral subquery kept apart by
    ``OFFSET 0``): with ``= ANY(array)`` a history table that grew since it was last analyzed is
    read in full. The single form plans faster (the worker's path for one waiting notification).
    """
    table, obj, date, pk = _sql_names(history_model, attname)
    if single:
        records = f"SELECT * FROM {table} WHERE {pk} = %s"
    else:
        records = (
            "SELECT h.* FROM unnest(%s) AS ids(id) CROSS JOIN LATERAL ("
            f"SELECT * FROM {table} WHERE {pk} = ids.id OFFSET 0) h"
        )
    before_cur = _before(history_model, obj, date, pk, f"cur.{obj}", f"cur.{date}", f"cur.{pk}")
    return (
        f"WITH cur AS ({records}) "
        f"SELECT cur.*, NULL AS {_PREVIOUS_OF} FROM cur UNION ALL "
        f"SELECT p.*, cur.{pk} FROM cur CROSS JOIN LATERAL ("
        f"SELECT * FROM {table} {before_cur}) p "
        "WHERE cur.history_type = '~'"
    )


@functools.cache
def _previous_sql(history_model: type[models.Model], attname: str) -> str:
    table, obj, date, pk = _sql_names(history_model, attname)
    return f"SELECT * FROM {table} {_before(history_model, obj, date, pk, '%s', '%s', '%s')}"


def _before(
    history_model: type[models.Model],
    obj: str,
    date: str,
    pk: str,
    of_obj: str,
    of_date: str,
    of_pk: str,
) -> str:
    """The filter and order that pick the record just before (of_obj, of_date, of_pk): the same
    object, the latest below it in history order."""
    if numbered(history_model):
        return f"WHERE {obj} = {of_obj} AND {pk} < {of_pk} ORDER BY {pk} DESC LIMIT 1"
    return (
        f"WHERE {obj} = {of_obj} AND ({date}, {pk}) < ({of_date}, {of_pk}) "
        f"ORDER BY {date} DESC, {pk} DESC LIMIT 1"
    )


def history_order(history_model: type[models.Model]) -> list[str]:
    """``order_by`` arguments of history order."""
    pk = history_model._meta.pk
    assert pk is not None
    return [pk.name] if numbered(history_model) else ["history_date", pk.name]


def _sql_names(history_model: type[models.Model], attname: str) -> tuple[str, str, str, str]:
    """Quoted table, object column, history_date column and primary key column."""
    meta = history_model._meta
    assert meta.pk is not None
    columns = {f.attname: str(f.column) for f in meta.concrete_fields}
    return (
        identifier(meta.db_table),
        identifier(columns[attname]),
        identifier(columns["history_date"]),
        identifier(meta.pk.column),
    )
