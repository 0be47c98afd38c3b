"""Parked notifications: listing, retrying and purging them (what the commands and admin use)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import models, transaction
from django.utils import timezone
from pgpubsub.channel import locate_channel

from .exceptions import ChannelConfigurationError
from .models import Notification, State


def parked(
    channels: Sequence[str | type[Any]] = (),
    models_: Sequence[str] = (),
    ids: Sequence[int] = (),
    using: str = "default",
) -> models.QuerySet[Notification]:
    """Parked notifications, optionally of some channels, models (``app.Model``) or ids."""
    queryset = Notification.objects.using(using).filter(state=State.PARKED)
    if channels:
        names = []
        for channel in channels:
            try:
                names.append(locate_channel(channel).listen_safe_name())
            except Exception:
                raise ChannelConfigurationError(f"channel {channel!r} not found") from None
        queryset = queryset.filter(channel__in=names)
    if models_:
        queryset = queryset.filter(model__in=list(models_))
    if ids:
        queryset = queryset.filter(pk__in=list(ids))
    ordered: models.QuerySet[Notification] = queryset.order_by("pk")
    return ordered


#: Rows updated or deleted per statement by :func:`retry` and :func:`purge`.
CHUNK = 1000


def retry(
    queryset: models.QuerySet[Notification], on_chunk: Callable[[int], None] | None = None
) -> int:
    """Make parked notifications pending again, due now, with their attempts reset.

    One transaction, in chunks of :data:`CHUNK` rows; ``on_chunk(n)`` reports each (progress).
    """
    return _chunked(
        queryset,
        lambda chunk: chunk.update(state=State.PENDING, attempts=0, available_at=timezone.now()),
        on_chunk,
    )


def purge(
    queryset: models.QuerySet[Notification], on_chunk: Callable[[int], None] | None = None
) -> int:
    """Delete parked notifications (their historical records stay: replay them if needed).

    One transaction, in chunks of :data:`CHUNK` rows; ``on_chunk(n)`` reports each (progress).
    """
    return _chunked(queryset, lambda chunk: chunk.delete()[0], on_chunk)


def _chunked(
    queryset: models.QuerySet[Notification],
    apply: Callable[[models.QuerySet[Notification]], int],
    on_chunk: Callable[[int], None] | None,
) -> int:
    total = 0
    with transaction.atomic(using=queryset.db):
        ids = list(
            queryset.filter(state=State.PARKED)
            .select_for_update(skip_locked=True)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        for start in range(0, len(ids), CHUNK):
            done = apply(
                Notification.objects.using(queryset.db).filter(pk__in=ids[start : start + CHUNK])
            )
            total += done
            if on_chunk is not None:
                on_chunk(done)
    return total
