"""Parked notifications: parking those of models removed from the project (a worker's sweep),
selecting, retrying and purging them (the ``parked`` command, the admin). Thin over ``queue``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.apps import apps
from django.db import models, transaction

from . import queue, registry
from .channels import is_history_channel, locate
from .exceptions import PgpubsubSimplehistoryError
from .models import Notification
from .settlement import logger

#: Rows updated or deleted per statement by :func:`retry` and :func:`purge`.
CHUNK = 1000


class SelectionError(PgpubsubSimplehistoryError):
    """A selection of parked notifications names something that does not exist."""


def parked(
    channels: Sequence[str | type[Any]] = (),
    models_: Sequence[str] = (),
    ids: Sequence[int] = (),
    using: str = "default",
) -> models.QuerySet[Notification]:
    """Parked notifications, optionally of some channels (classes or class paths), models
    (``app.Model``) or ids.

    Raises :class:`SelectionError` for a channel that is not a history channel, a model that is
    not installed, or an id that no parked notification has: a typo selects nothing, silently,
    otherwise. (A valid selection may still match nothing: the queryset is then empty.)
    """
    names = []
    for channel in channels:
        found = locate(channel)
        if found is None or not is_history_channel(found):
            raise SelectionError(f"history channel {channel!r} not found")
        names.append(found.listen_safe_name())
    labels = [_model_label(model) for model in models_]
    if ids:
        found_ids = set(queue.parked((), (), ids, using).values_list("pk", flat=True))
        missing = [str(i) for i in dict.fromkeys(ids) if i not in found_ids]
        if missing:
            raise SelectionError(
                f"no parked notification has id {', '.join(missing)} "
                "(manage.py parked list shows them)"
            )
    return queue.parked(names, labels, ids, using)


def _model_label(model: str) -> str:
    """The label notifications store (``shop.Order``) of an installed model."""
    try:
        return str(apps.get_model(model)._meta.label)
    except (LookupError, ValueError):
        raise SelectionError(
            f"unknown model {model!r} (expected app_label.ModelName of an installed model)"
        ) from None


def retry(
    queryset: models.QuerySet[Notification], on_chunk: Callable[[int], None] | None = None
) -> int:
    """Make parked notifications pending again, due now, with their attempts reset.

    One transaction, in chunks of :data:`CHUNK` rows; ``on_chunk(n)`` reports each (progress).
    """
    return _chunked(queryset, queue.make_pending, on_chunk)


def purge(
    queryset: models.QuerySet[Notification], on_chunk: Callable[[int], None] | None = None
) -> int:
    """Delete parked notifications (their history records stay: replay them if needed).

    One transaction, in chunks of :data:`CHUNK` rows; ``on_chunk(n)`` reports each (progress).
    """
    return _chunked(queryset, queue.purge, on_chunk)


def _chunked(
    queryset: models.QuerySet[Notification],
    apply: Callable[[Sequence[int], str], int],
    on_chunk: Callable[[int], None] | None,
) -> int:
    total = 0
    using = queryset.db
    with transaction.atomic(using=using):
        ids = queue.lock_parked_ids(queryset)
        for start in range(0, len(ids), CHUNK):
            done = apply(ids[start : start + CHUNK], using)
            total += done
            if on_chunk is not None:
                on_chunk(done)
    return total


def park_orphans(using: str = "default", examined: set[str] | None = None) -> int:
    """Park the pending notifications of models removed from this project.

    Their channel is gone with their model, so no worker would ever claim them. Only models of
    apps installed here are considered: a listen name of another project sharing the database
    is left alone (``listener_health`` lists it). Names in ``examined`` are skipped, and the
    names looked at are added to it (a worker looks at a name again once a minute: each look
    reads its pending rows).
    """
    known = {channel.listen_safe_name() for channel in registry.channels()}
    installed = {config.label for config in apps.get_app_configs()}
    parked = 0
    for name in queue.listen_names(using):
        if name in known or (examined is not None and name in examined):
            continue
        if examined is not None:
            examined.add(name)
        for history_model, model in queue.models_of(name, using):
            app = model.partition(".")[0]
            if app not in installed or _is_model(history_model):
                continue
            error = (
                f"UnknownModel: {model} (history model {history_model}) is not installed: it "
                f"was removed from app {app!r}, and no channel of this project has the listen "
                f"name {name!r}"
            )
            count = queue.park_history_model(name, history_model, error, using)
            if count:
                logger.error("parked %d notification(s): %s", count, error)
            parked += count
    return parked


def _is_model(label: str) -> bool:
    try:
        apps.get_model(label)
    except (LookupError, ValueError):
        return False
    return True
