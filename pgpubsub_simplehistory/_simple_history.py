"""The only module that depends on django-simple-history internals: its history descriptor and
the list of fields a history model excludes.

``Model.history`` is a ``HistoryDescriptor`` whose ``__get__`` builds a new manager class on every
access, and simple-history reads that attribute on every save: the descriptor below builds the
class once (docs/performance.md has what that saves). ``tests/test_upstream_contract.py`` fails
when upstream changes what this module relies on.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from simple_history.manager import HistoryDescriptor


class CachedHistoryDescriptor(HistoryDescriptor):  # type: ignore[misc]
    """A ``HistoryDescriptor`` that creates its manager class once."""

    def __init__(self, upstream: Any) -> None:
        super().__init__(
            upstream.model, manager=upstream.manager_class, queryset=upstream.queryset_class
        )
        self.manager_type = self.manager_class.from_queryset(self.queryset_class)

    def __get__(self, instance: Any, owner: Any) -> Any:
        return self.manager_type(self.model, instance)


def cache_history_manager(model: type[models.Model], manager_name: str) -> None:
    """Replace the plain ``HistoryDescriptor`` set on ``model`` by simple-history's ``finalize``."""
    descriptor = model.__dict__.get(manager_name)
    if type(descriptor) is HistoryDescriptor:
        setattr(model, manager_name, CachedHistoryDescriptor(descriptor))


def excluded_fields(history_model: type[models.Model]) -> frozenset[str]:
    """Names of the tracked model's fields that its history model does not record
    (``HistoricalRecords(excluded_fields=...)``)."""
    return frozenset(getattr(history_model, "_history_excluded_fields", ()) or ())
