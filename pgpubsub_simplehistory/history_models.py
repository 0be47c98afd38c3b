"""Looking up a tracked model's historical model (cached) and the apps that migrate them."""

from __future__ import annotations

from django.db import models
from simple_history.utils import get_history_model_for_model

_history_models: dict[type[models.Model], type[models.Model]] = {}


def history_model_of(model: type[models.Model]) -> type[models.Model]:
    """The ``HistoricalX`` model of ``model``.

    Raises simple-history's ``NotHistoricalModelError`` when the model has no history.
    simple-history's descriptor builds a manager class on every access, so the answer is cached.
    """
    cached = _history_models.get(model)
    if cached is None:
        cached = get_history_model_for_model(model)
        _history_models[model] = cached
    return cached


def migration_apps(model: type[models.Model]) -> list[str]:
    """App labels whose migrations change ``model`` or its history model (recorded per change)."""
    return sorted({str(model._meta.app_label), str(history_model_of(model)._meta.app_label)})


_object_attnames: dict[tuple[type[models.Model], type[models.Model]], str] = {}


def object_attname(history_model: type[models.Model], model: type[models.Model]) -> str:
    """The attribute of a history record that holds the object's primary key."""
    key = (history_model, model)
    if key not in _object_attnames:
        assert model._meta.pk is not None
        field = history_model._meta.get_field(model._meta.pk.name)
        _object_attnames[key] = str(getattr(field, "attname", field.name))
    return _object_attnames[key]


def numbered(history_model: type[models.Model]) -> bool:
    """Whether the history ids come from a sequence: they are then the history order (the
    ordering trigger numbers an object's records in the order they commit)."""
    pk = history_model._meta.pk
    assert pk is not None
    return pk.get_internal_type() in ("AutoField", "BigAutoField", "SmallAutoField")
