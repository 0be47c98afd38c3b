"""Parked notifications: listing, retrying and purging them (what the commands and admin use)."""

from __future__ import annotations

from collections.abc import Sequence
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


def retry(queryset: models.QuerySet[Notification]) -> int:
    """Make parked notifications pending again, due now, with their attempts reset."""
    with transaction.atomic(using=queryset.db):
        updated: int = queryset.filter(state=State.PARKED).update(
            state=State.PENDING, attempts=0, available_at=timezone.now()
        )
    return updated


def purge(queryset: models.QuerySet[Notification]) -> int:
    """Delete parked notifications (their historical records stay: replay them if needed)."""
    deleted: int = queryset.filter(state=State.PARKED).delete()[0]
    return deleted
