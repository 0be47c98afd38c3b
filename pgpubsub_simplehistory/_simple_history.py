"""The only module that depends on django-simple-history internals: the ``finalize`` step of
``HistoricalRecords`` and the attributes it sets, its history descriptor, and the list of fields
a history model excludes.

``tracking`` needs to act once simple-history has attached a history model to a model, which
upstream does in the undocumented ``HistoricalRecords.finalize``: :class:`FinalizeHookRecords`
is the one override of it, and the small functions below read what it set. ``Model.history`` is
a ``HistoryDescriptor`` whose ``__get__`` builds a new manager class on every access, and
simple-history reads that attribute on every save: :func:`cache_history_manager` builds the class
once (docs/performance.md has what that saves). ``tests/test_upstream_contract.py`` fails when
upstream changes what this module relies on.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from simple_history.manager import HistoryDescriptor
from simple_history.models import HistoricalRecords


class FinalizeHookRecords(HistoricalRecords):  # type: ignore[misc]
    """simple-history's ``HistoricalRecords`` that calls :meth:`history_attached` once it has
    attached history to a concrete model it tracks.

    simple-history connects ``finalize`` to ``class_prepared`` for every model prepared after
    the one declaring the field (and ``register`` calls it directly): it builds the history
    model, connects the save/delete signals and sets the ``history`` descriptor there.
    """

    def finalize(self, sender: type[models.Model], **kwargs: Any) -> None:
        super().finalize(sender, **kwargs)
        if not sender._meta.abstract and tracks(self, sender):
            self.history_attached(sender)

    def history_attached(self, model: type[models.Model]) -> None:
        """Called once ``model`` has its history model, signal receivers and manager."""


def tracks(records: HistoricalRecords, model: type[models.Model]) -> bool:
    """True when ``records`` (a ``HistoricalRecords`` whose ``finalize`` has run for ``model``)
    is what attached history to ``model``: the model it was declared on or registered for, or a
    subclass of it with ``inherit=True``."""
    if getattr(model._meta, "simple_history_manager_attribute", None) != records.manager_name:
        return False
    declared_on = records.cls
    return model is declared_on or bool(records.inherit and issubclass(model, declared_on))


def history_manager_name(records: HistoricalRecords) -> str:
    """The attribute holding the history manager on the models ``records`` tracks (the name
    ``HistoricalRecords`` was assigned to, or ``register``'s ``manager_name``)."""
    return str(records.manager_name)


def writes_history_with_model(records: HistoricalRecords) -> bool:
    """True when ``records`` saves history rows on the database the tracked row was saved on
    (``HistoricalRecords(use_base_model_db=True)``) rather than where the router sends them."""
    return bool(records.use_base_model_db)


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
