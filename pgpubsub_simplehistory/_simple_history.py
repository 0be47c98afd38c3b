"""The only module that depends on a django-simple-history internal: its history descriptor.

``Model.history`` / ``instance.history`` is a ``HistoryDescriptor`` whose ``__get__`` builds a new
manager class (``HistoryManager.from_queryset(HistoricalQuerySet)``, which walks the queryset's
members with ``inspect``) on every access, and simple-history reads that attribute on every
save to find the history model: about 150 µs of a ~900 µs tracked ``save()`` inside a
transaction on a 2-core machine (timed before and after). The descriptor below builds the class
once. ``tests/test_upstream_contract.py`` fails if upstream changes what
this relies on.
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
