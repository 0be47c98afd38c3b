"""The one module that depends on django-pgtrigger beyond subclassing ``pgtrigger.Trigger``.

Registering a trigger on a model and asking whether it is installed use pgtrigger's public
methods; what their answers mean (the status strings of ``pgtrigger.core``), the migration
operations and compiled triggers that record an installation (``pgtrigger.migrations.AddTrigger``,
``pgtrigger.compiler.Trigger`` and its ``hash``) and the import side effect that makes Django
accept ``Meta.triggers`` are upstream detail, kept here and checked by
``tests/test_upstream_contract.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pgtrigger

#: ``Trigger.get_installation_status`` of a trigger installed as defined (``pgtrigger.core``).
INSTALLED = "INSTALLED"


# django-pgtrigger annotates model classes as ``models.Model`` instances: hence the ``Any``.


def accept_meta_triggers() -> None:
    """Make Django accept a ``triggers`` option in model ``Meta`` classes, as it does once the
    ``pgtrigger`` app is installed."""
    # Imported for its side effect only: importing ``pgtrigger.apps`` appends "triggers" to
    # ``django.db.models.options.DEFAULT_NAMES`` (nothing in it needs to be called, and its
    # ``ready()``, which patches migrations and registers triggers, is not run). Django imports
    # that module only for an installed app, and this package must load models (django-pgpubsub's
    # ``Notification`` declares ``Meta.triggers``) before its system checks can report that
    # ``pgtrigger`` is missing.
    import pgtrigger.apps  # noqa: F401


def register(trigger: pgtrigger.Trigger, model: Any) -> None:
    """Register ``trigger`` on ``model``: makemigrations writes it, migrate installs it."""
    trigger.register(model)


def trigger_named(model: Any, name: str) -> Any | None:
    """The trigger named ``name`` registered on ``model``, if any."""
    return next((t for m, t in pgtrigger.registered() if m is model and t.name == name), None)


def unregister(trigger: pgtrigger.Trigger, model: Any) -> None:
    trigger.unregister(model)


def installation_problem(trigger: pgtrigger.Trigger, model: Any, alias: str) -> str | None:
    """None when ``trigger`` is installed on ``model`` as defined in database ``alias``; else
    its status in lower case (``uninstalled``, ``outdated``). None too where it is not migrated
    (a router keeps the model off that database)."""
    if not trigger.allow_migrate(model, alias):
        return None
    status, _ = trigger.get_installation_status(model, database=alias)
    return None if status == INSTALLED else str(status).lower()


def identify(trigger: pgtrigger.Trigger, model: Any) -> tuple[str, str, str]:
    """``(app label, model name, hash)``: a trigger on a model as defined now."""
    return (
        str(model._meta.app_label),
        str(model._meta.model_name),
        str(trigger.compile(model).hash),
    )


def pending_installs(alias: str) -> set[tuple[str, str, str]]:
    """What the migrations ``migrate`` would apply to ``alias`` install, as :func:`identify`
    gives it: their ``AddTrigger`` operations and the ``triggers`` of their ``CreateModel``.

    Empty when the migrations cannot be read (the checks then report what is installed only).
    """
    from django.db import DatabaseError, connections
    from django.db.migrations.exceptions import MigrationSchemaMissing
    from django.db.migrations.executor import MigrationExecutor
    from django.db.migrations.operations import CreateModel
    from pgtrigger.compiler import Trigger as CompiledTrigger
    from pgtrigger.migrations import AddTrigger

    try:
        executor = MigrationExecutor(connections[alias])
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except (DatabaseError, MigrationSchemaMissing):
        return set()
    found = set()
    for migration, backwards in plan:
        if backwards:
            continue
        for operation in migration.operations:
            if isinstance(operation, AddTrigger):
                triggers = [(operation.model_name, operation.trigger)]
            elif isinstance(operation, CreateModel):
                triggers = [(operation.name, t) for t in operation.options.get("triggers", [])]
            else:
                continue
            for model_name, trigger in triggers:
                if isinstance(trigger, CompiledTrigger):
                    found.add((migration.app_label, model_name.lower(), str(trigger.hash)))
    return found


@contextmanager
def isolated() -> Iterator[None]:
    """Unregister, on exit, every trigger registered inside the block (tests)."""
    before = {id(trigger) for _, trigger in pgtrigger.registered()}
    try:
        yield
    finally:
        for model, trigger in pgtrigger.registered():
            if id(trigger) not in before:
                trigger.unregister(model)
