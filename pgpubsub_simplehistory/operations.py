"""``BackfillHistory``: a migration operation that fills a field of the *historical* table.

A data migration that back-fills a new or changed field on the live table (``RunPython``) writes no
history: every historical row keeps the column default, and a notification still pending resolves
to an object that breaks the invariant the migration established. Put ``BackfillHistory`` in the
same migration, after the ``RunPython``::

    operations = [
        migrations.RunPython(fill_priority, migrations.RunPython.noop),
        BackfillHistory("Order", fields=["priority"], from_live=True,
                        function=lambda record: {"priority": priority_for(record.total)}),
    ]

- ``from_live=True`` copies the fields from the live row with the same primary key, in one
  ``UPDATE ... FROM``.
- ``function(record) -> dict`` computes them from the historical row itself (a state model
  instance, as in ``RunPython``); it fills every historical row, or with ``from_live=True`` the
  rows whose object no longer exists.

Backwards it does nothing: the values it wrote are either dropped by the reverse of the migration
that added the field, or valid in the previous state too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import router
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState
from django.db.models import Field, Model

Filler = Callable[[Any], dict[str, Any]]


class BackfillHistory(Operation):
    """Fill ``fields`` of a model's historical table from the live row or a function.

    Args:
        model_name: The tracked model, as named in this migration's state.
        fields: Names of the fields to fill (on both the model and its historical model).
        from_live: Copy the values from the live row with the same primary key.
        function: ``function(historical_record) -> {field: value}`` for the rows not filled from
            a live row.
        history_model: ``"app_label.ModelName"`` of the historical model when it is not
            ``Historical<model_name>`` in the same app (``custom_model_name``, ``app=``).
        batch_size: Rows per ``bulk_update`` when ``function`` is used.
    """

    reversible = True
    reduces_to_sql = False

    def __init__(
        self,
        model_name: str,
        fields: Sequence[str],
        *,
        from_live: bool = False,
        function: Filler | None = None,
        history_model: str | None = None,
        batch_size: int = 1000,
    ) -> None:
        if not fields:
            raise ValueError("BackfillHistory needs at least one field to fill")
        if not from_live and function is None:
            raise ValueError("BackfillHistory needs from_live=True, a function, or both")
        self.model_name = model_name
        self.fields = list(fields)
        self.from_live = from_live
        self.function = function
        self.history_model = history_model
        self.batch_size = batch_size

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs: dict[str, Any] = {"fields": self.fields}
        if self.from_live:
            kwargs["from_live"] = True
        if self.function is not None:
            kwargs["function"] = self.function
        if self.history_model is not None:
            kwargs["history_model"] = self.history_model
        if self.batch_size != 1000:
            kwargs["batch_size"] = self.batch_size
        return (self.__class__.__qualname__, [self.model_name], kwargs)

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        return None

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        apps = to_state.apps
        live = apps.get_model(app_label, self.model_name)
        history = (
            apps.get_model(self.history_model)
            if self.history_model
            else apps.get_model(app_label, f"Historical{self.model_name}")
        )
        alias = schema_editor.connection.alias
        if not router.allow_migrate_model(alias, history):
            return
        self._check_fields(live, history)
        if self.from_live:
            self._copy_from_live(schema_editor, live, history)
        if self.function is not None:
            self._apply_function(alias, live, history)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        return None

    def describe(self) -> str:
        return f"Back-fill {', '.join(self.fields)} of the history of {self.model_name}"

    @property
    def migration_name_fragment(self) -> str:
        return f"backfill_history_{self.model_name.lower()}"

    def _check_fields(self, live: type[Model], history: type[Model]) -> None:
        for name in self.fields:
            for model in (live, history):
                try:
                    model._meta.get_field(name)
                except Exception:
                    raise ValueError(
                        f"BackfillHistory: {model._meta.label} has no field {name!r}"
                    ) from None

    def _copy_from_live(
        self, schema_editor: BaseDatabaseSchemaEditor, live: type[Model], history: type[Model]
    ) -> None:
        q = schema_editor.quote_name
        assert live._meta.pk is not None
        object_column = _column(history, live._meta.pk.name)
        assignments = ", ".join(
            f"{q(_column(history, f))} = live.{q(_column(live, f))}" for f in self.fields
        )
        schema_editor.execute(
            f"UPDATE {q(history._meta.db_table)} AS hist SET {assignments} "
            f"FROM {q(live._meta.db_table)} AS live "
            f"WHERE hist.{q(object_column)} = live.{q(live._meta.pk.column)}"
        )

    def _apply_function(self, alias: str, live: type[Model], history: type[Model]) -> None:
        assert self.function is not None
        assert live._meta.pk is not None
        rows = history._default_manager.using(alias).order_by("pk")
        if self.from_live:
            object_attname = _attname(history, live._meta.pk.name)
            existing = live._default_manager.using(alias).values("pk")
            rows = rows.exclude(**{f"{object_attname}__in": existing})
        batch: list[Model] = []
        for record in rows.iterator(chunk_size=self.batch_size):
            values = self.function(record)
            unknown = set(values) - set(self.fields)
            if unknown:
                raise ValueError(
                    f"BackfillHistory function returned fields not listed in fields=: "
                    f"{sorted(unknown)}"
                )
            for name, value in values.items():
                setattr(record, name, value)
            batch.append(record)
            if len(batch) >= self.batch_size:
                history._default_manager.using(alias).bulk_update(batch, self.fields)
                batch = []
        if batch:
            history._default_manager.using(alias).bulk_update(batch, self.fields)


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    if not isinstance(field, Field):
        raise ValueError(f"BackfillHistory: {model._meta.label}.{name} is not a concrete field")
    return field


def _column(model: type[Model], name: str) -> str:
    return str(_field(model, name).column)


def _attname(model: type[Model], name: str) -> str:
    return str(_field(model, name).attname)
