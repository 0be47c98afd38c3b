"""``HistoryTriggerChannel``: a django-pgpubsub channel whose notifications point into history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import models
from simple_history.exceptions import NotHistoricalModelError

from ._pgpubsub import TriggerChannel
from .exceptions import ChannelConfigurationError
from .history_models import history_model_of

if TYPE_CHECKING:
    from .event import HistoryEvent
    from .subscribe import Subscription


@dataclass
class HistoryTriggerChannel(TriggerChannel):  # type: ignore[misc]
    """Declare one of these per model (or per consumer) and subscribe listeners to it.

    ``model`` is the tracked model (it must have ``history = HistoricalRecords()``). The trigger is
    installed on the model's *historical* table: its notification carries ``(history_model,
    history_id)``, never the row, so it still resolves after the model's schema changed.

    Attributes:
        model: The model whose changes are published.
        lock_notifications: Store each notification so that exactly one listener process
            handles it, in per-object order, with retries, and nothing is lost while no listener
            runs.
        max_attempts: Attempts before a failing notification is parked (lockable channels).
        retry_base_delay: Seconds before the first retry; doubled for each further attempt.
        retry_max_delay: Upper bound of the delay between attempts, in seconds.
        parked_blocks_object: While a notification is parked, later changes of the same object
            wait (True, the default: order is never broken) or flow (False).
    """

    model: ClassVar[Any] = NotImplementedError
    lock_notifications: ClassVar[bool] = False
    max_attempts: ClassVar[int] = 5
    retry_base_delay: ClassVar[float] = 1.0
    retry_max_delay: ClassVar[float] = 300.0
    parked_blocks_object: ClassVar[bool] = True

    history: Any = None
    event: HistoryEvent | None = None

    @classmethod
    def tracked_model(cls) -> type[models.Model]:
        model = cls.model
        if not (isinstance(model, type) and issubclass(model, models.Model)):
            raise ChannelConfigurationError(
                f"{cls.name()}.model must be a Django model class, not {model!r}"
            )
        return model

    @classmethod
    def history_model(cls) -> type[models.Model]:
        """The ``HistoricalX`` model of ``model``."""
        model = cls.tracked_model()
        try:
            return history_model_of(model)
        except NotHistoricalModelError:
            raise ChannelConfigurationError(
                f"{cls.name()}: {model._meta.label} has no django-simple-history "
                "HistoricalRecords; add `history = HistoricalRecords()` to the model"
            ) from None

    @classmethod
    def subscriptions(cls) -> list[Subscription]:
        from .subscribe import subscriptions_of

        return subscriptions_of(cls)

    @classmethod
    def history_types(cls) -> frozenset[str]:
        """The history types ('+', '~', '-') that at least one subscription listens to."""
        types: set[str] = set()
        for subscription in cls.subscriptions():
            types |= subscription.history_types
        return frozenset(types)

    @classmethod
    def build_from_payload(cls, notification_payload: Any, callbacks: Any) -> Any:
        raise ChannelConfigurationError(
            f"{cls.name()} is a history channel but django-pgpubsub's own listener is processing "
            "it: put 'pgpubsub_simplehistory' before 'pgpubsub' in INSTALLED_APPS so that "
            "`manage.py listen` is this package's command"
        )


def is_history_channel(channel: object) -> bool:
    return isinstance(channel, type) and issubclass(channel, HistoryTriggerChannel)
