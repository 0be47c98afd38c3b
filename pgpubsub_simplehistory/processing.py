"""Processing: one notification → resolved change → subscribed listeners, in one transaction.

Owns the database state of notifications: a stored (lockable) notification is claimed by primary
key with ``FOR UPDATE SKIP LOCKED``, the listeners run in a savepoint inside the claiming
transaction, and the stored row is deleted in that same transaction only when they all succeed.
When anything fails the listeners' writes are rolled back, the row is kept for the next sweep and
one error line names channel, model and history id.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from . import _pgpubsub
from .channel import HistoryTriggerChannel, is_history_channel
from .exceptions import PgpubsubSimplehistoryError
from .payload import HistoryPayload
from .resolution import ResolvedChange, resolve

logger = logging.getLogger("pgpubsub_simplehistory")


class Outcome(enum.Enum):
    PROCESSED = "processed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class SweepResult:
    processed: int = 0
    failed: int = 0
    skipped: int = 0

    def add(self, outcome: Outcome) -> None:
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)


def dispatch(change: ResolvedChange) -> int:
    """Call every listener of the change's channel that subscribes to its history type."""
    called = 0
    for subscription in change.channel.subscriptions():
        if subscription.accepts(change.event.history_type):
            subscription.call(change)
            called += 1
    return called


def handle_notify(channel_name: str, payload: str, notify: Any = None) -> Outcome:
    """Handle one NOTIFY received on ``channel_name``. Never raises for bad input."""
    channel = _pgpubsub.channel_by_listen_name(channel_name)
    if channel is None:
        logger.error("notification on unknown channel %s ignored: %.200s", channel_name, payload)
        return Outcome.FAILED
    if not is_history_channel(channel):
        return _handle_plain(channel, notify)
    if channel.lock_notifications:
        if payload == "":
            # django-pgpubsub's process_stored_notifications() asks listeners to recover.
            sweep(channel)
            return Outcome.PROCESSED
        parsed = _parse(channel, payload)
        if parsed is None:
            return Outcome.FAILED
        if parsed.notification_id is None:
            logger.error(
                "notification on lockable channel %s without notification_id (history_id=%r); "
                "sweeping the channel's stored notifications instead",
                channel.name(),
                parsed.history_id,
            )
            sweep(channel)
            return Outcome.FAILED
        return process_stored(channel, parsed.notification_id)
    parsed = _parse(channel, payload)
    if parsed is None:
        return Outcome.FAILED
    return _run(channel, parsed)


def process_stored(channel: type[HistoryTriggerChannel], notification_id: int) -> Outcome:
    """Claim stored notification ``notification_id`` by key, process it, delete it on success."""
    with transaction.atomic():
        stored = (
            _pgpubsub.stored_notifications()
            .select_for_update(skip_locked=True)
            .filter(pk=notification_id, channel=channel.listen_safe_name())
            .first()
        )
        if stored is None:
            logger.debug(
                "notification %s of %s already taken or processed", notification_id, channel.name()
            )
            return Outcome.SKIPPED
        return _process_claimed(channel, stored)


def _process_claimed(channel: type[HistoryTriggerChannel], stored: Any) -> Outcome:
    parsed = _parse(channel, stored.payload, notification_id=stored.pk)
    if parsed is None:
        return Outcome.FAILED
    outcome = _run(channel, parsed)
    if outcome is Outcome.PROCESSED:
        stored.delete()
    return outcome


def sweep(channel: type[HistoryTriggerChannel], limit: int | None = None) -> SweepResult:
    """Process the channel's stored notifications, oldest first, each in its own transaction.

    Notifications that fail stay stored; the sweep moves past them (it never loops on one).
    """
    result = SweepResult()
    last_id = 0
    name = channel.listen_safe_name()
    while limit is None or result.processed + result.failed < limit:
        with transaction.atomic():
            stored = (
                _pgpubsub.stored_notifications()
                .select_for_update(skip_locked=True)
                .filter(channel=name, pk__gt=last_id)
                .order_by("pk")
                .first()
            )
            if stored is None:
                break
            last_id = stored.pk
            result.add(_process_claimed(channel, stored))
    if result.processed or result.failed:
        logger.info(
            "swept %s: %d processed, %d failed (kept for retry)",
            channel.name(),
            result.processed,
            result.failed,
        )
    return result


def _parse(
    channel: type[HistoryTriggerChannel], raw: Any, notification_id: int | None = None
) -> HistoryPayload | None:
    try:
        parsed = HistoryPayload.parse(raw)
    except PgpubsubSimplehistoryError as exc:
        where = f" (stored notification {notification_id})" if notification_id else ""
        logger.error("invalid notification on channel %s%s: %s", channel.name(), where, exc)
        return None
    if notification_id is not None and parsed.notification_id is None:
        parsed = HistoryPayload(**{**parsed.__dict__, "notification_id": notification_id})
    return parsed


def _run(channel: type[HistoryTriggerChannel], payload: HistoryPayload) -> Outcome:
    started = time.perf_counter()
    where = (
        f"channel {channel.name()} model {payload.model_label} history_id={payload.history_id!r}"
    )
    try:
        with transaction.atomic():
            change = resolve(channel, payload)
            dispatch(change)
    except PgpubsubSimplehistoryError as exc:
        logger.error("cannot process %s: %s", where, exc)
        return Outcome.FAILED
    except Exception:
        logger.exception("listener failed for %s; its changes were rolled back", where)
        return Outcome.FAILED
    logger.info(
        "processed %s type=%s in %.1f ms",
        where,
        payload.history_type,
        (time.perf_counter() - started) * 1000,
        extra={
            "channel": channel.name(),
            "model": payload.model_label,
            "history_id": payload.history_id,
        },
    )
    return Outcome.PROCESSED


def _handle_plain(channel: type[Any], notify: Any) -> Outcome:
    try:
        with transaction.atomic():
            _pgpubsub.process_plain_notification(channel, notify)
    except Exception:
        logger.exception("listener of django-pgpubsub channel %s failed", channel.name())
        return Outcome.FAILED
    return Outcome.PROCESSED
