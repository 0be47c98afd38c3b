"""Tracking models: ``HistoricalRecords`` whose history record commits with the save.

Django sends ``post_save`` after the save's own atomic block has closed, so in autocommit
django-simple-history writes the historical row in a second transaction: if that insert fails,
the change is committed without history and without a notification. This subclass wraps the
model's ``save_base`` in ``transaction.atomic(savepoint=False)``: inside a caller's transaction it
costs nothing, in autocommit it turns two commits into one.

Deletes and m2m changes need nothing: Django already sends their signals inside its atomic block.
A model you do not own (``User``, a third-party app's model) is tracked with :func:`register`,
simple-history's ``register`` with the same atomic saves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import simple_history
from django.db import models, router, transaction
from simple_history.models import HistoricalRecords as _SimpleHistoricalRecords

from ._simple_history import (
    FinalizeHookRecords,
    cache_history_manager,
    history_manager_name,
    writes_history_with_model,
)

#: Marker set on the wrapping ``save_base`` function.
ATOMIC_SAVE_MARKER = "_pgpubsub_simplehistory_atomic_save"


class HistoricalRecords(FinalizeHookRecords):
    """django-simple-history's ``HistoricalRecords`` with atomic saves.

    Use it exactly like the original; only the import changes::

        from pgpubsub_simplehistory import HistoricalRecords

        class Order(models.Model):
            history = HistoricalRecords()

    A save, its historical record and the notification written by the history trigger then
    commit together or not at all, also when the caller opened no transaction. The ``history``
    manager class is built once per model rather than on every access (simple-history reads it
    on every save), which makes a tracked save cheaper.
    """

    def history_attached(self, model: type[models.Model]) -> None:
        make_saves_atomic(model)
        cache_history_manager(model, history_manager_name(self))
        _trackers[model] = self


#: The HistoricalRecords tracking each model tracked with this subclass (for the system checks).
_trackers: dict[type[models.Model], HistoricalRecords] = {}


def history_written_with_model(model: type[models.Model]) -> bool:
    """True when the model's history records go to the database its rows are saved on."""
    tracker = _trackers.get(model)
    return tracker is not None and writes_history_with_model(tracker)


def make_saves_atomic(model: type[models.Model]) -> None:
    """Wrap ``model.save_base`` so that ``post_save`` receivers run in the save's transaction."""
    original: Callable[..., Any] = model.save_base
    if getattr(original, ATOMIC_SAVE_MARKER, False):
        return  # inherited from a parent that is already wrapped

    @functools.wraps(original)
    def save_base(self: models.Model, *args: Any, using: str | None = None, **kw: Any) -> Any:
        using = using or router.db_for_write(self.__class__, instance=self)
        with transaction.atomic(using=using, savepoint=False):
            return original(self, *args, using=using, **kw)

    setattr(save_base, ATOMIC_SAVE_MARKER, True)
    model.save_base = save_base  # type: ignore[method-assign]


def register(
    model: type[models.Model],
    app: str | None = None,
    manager_name: str = "history",
    records_class: type[_SimpleHistoricalRecords] | None = None,
    table_name: str | None = None,
    **records_config: Any,
) -> None:
    """Track a model you do not own, with saves atomic with their history record.

    ``simple_history.register`` with this package's :class:`HistoricalRecords` (the same
    arguments; ``records_class`` defaults to it)::

        from django.contrib.auth.models import User

        import pgpubsub_simplehistory

        pgpubsub_simplehistory.register(User, app="accounts")  # in accounts/models.py

    Call it where simple-history's would be called: in a ``models.py`` (``app`` names the app
    whose migrations hold the history table). A ``records_class`` that does not derive from this
    package's ``HistoricalRecords`` still gets atomic saves.
    """
    simple_history.register(
        model,
        app=app,
        manager_name=manager_name,
        records_class=records_class or HistoricalRecords,
        table_name=table_name,
        **records_config,
    )
    make_saves_atomic(model)
    cache_history_manager(model, manager_name)


def saves_are_atomic(model: type[models.Model]) -> bool:
    """True when saves of ``model`` commit together with their history record."""
    return bool(getattr(model.save_base, ATOMIC_SAVE_MARKER, False))
