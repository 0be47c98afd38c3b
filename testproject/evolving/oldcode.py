"""Write changes as the application did at an earlier migration state (tests and demo).

The models come from the migration state the database is at
(``MigrationExecutor.loader.project_state``); each change writes the live row and its historical
record in one transaction, as django-simple-history did then. The installed triggers are real.
"""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone


class OldCode:
    def __init__(self, target: str, app_label: str = "evolving") -> None:
        state = MigrationExecutor(connection).loader.project_state((app_label, target))
        name = "Gadget" if target.startswith("0001") else "Widget"
        self.model = state.apps.get_model(app_label, name)
        self.history = state.apps.get_model(app_label, f"Historical{name}")

    def _record(self, obj: Any, history_type: str) -> None:
        values = {f.attname: getattr(obj, f.attname) for f in self.model._meta.concrete_fields}
        self.history.objects.create(
            **values, history_date=timezone.now(), history_type=history_type
        )

    def create(self, **values: Any) -> int:
        with transaction.atomic():
            obj = self.model.objects.create(**values)
            self._record(obj, "+")
        return int(obj.pk)

    def update(self, pk: int, **values: Any) -> None:
        with transaction.atomic():
            obj = self.model.objects.get(pk=pk)
            for name, value in values.items():
                setattr(obj, name, value)
            obj.save()
            self._record(obj, "~")

    def delete(self, pk: int) -> None:
        with transaction.atomic():
            obj = self.model.objects.get(pk=pk)
            obj.delete()
            obj.pk = pk
            self._record(obj, "-")
