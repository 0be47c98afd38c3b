"""The one module that depends on django-pgtrigger beyond subclassing ``pgtrigger.Trigger``.

Registering a trigger on a model and asking whether it is installed use pgtrigger's public
methods; what their answers mean (the status strings of ``pgtrigger.core``) is upstream detail,
kept here and checked by ``tests/test_upstream_contract.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pgtrigger

#: ``Trigger.get_installation_status`` of a trigger installed as defined (``pgtrigger.core``).
INSTALLED = "INSTALLED"


# django-pgtrigger annotates model classes as ``models.Model`` instances: hence the ``Any``.


def register(trigger: pgtrigger.Trigger, model: Any) -> None:
    """Register ``trigger`` on ``model``: makemigrations writes it, migrate installs it."""
    trigger.register(model)


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
