"""``HistoryTriggerChannel``: declare which model's changes are published, and how.

Declaring a channel class registers it (``registry``) and its trigger on the model's history
table (``trigger``): what the trigger stores depends on the channel alone, never on which
listeners happen to be subscribed. A misdeclared channel (no history, a proxy model) is
registered too, without a trigger, and reported by the system checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import models
from simple_history.exceptions import NotHistoricalModelError

from . import _pgtrigger, registry
from ._pgpubsub import TriggerChannel
from ._pgpubsub import locate as locate_plain
from .exceptions import ChannelConfigurationError
from .history_models import history_model_of
from .trigger import HistoryNotify, HistoryOrder

if TYPE_CHECKING:
    from .event import HistoryEvent


@dataclass
class HistoryTriggerChannel(TriggerChannel):  # type: ignore[misc]
    """Declare one of these per model (or per consumer) and subscribe listeners to it.

    ``model`` is the tracked model (it must have ``history = HistoricalRecords()``). The trigger is
    installed on the model's *historical* table: its notification carries ``(history_model,
    history_id)``, never the row, so it still resolves after the model's schema changed.

    Attributes:
        model: The model whose changes are published.
        history_types: The history types the trigger publishes: ``'+'`` (insert), ``'~'``
            (update), ``'-'`` (delete); all three by default. Listeners subscribe to some of them.
        lock_notifications: Store each notification so that exactly one worker handles it, in
            per-object order, with retries, and nothing is lost while no worker runs.
        max_attempts: Attempts before a failing notification is parked (lockable channels).
        retry_base_delay: Seconds before the first retry; doubled for each further attempt.
        retry_max_delay: Upper bound of the delay between attempts, in seconds.
        parked_blocks_object: While a notification is parked, later changes of the same object
            wait (True, the default: order is never broken) or flow (False).
    """

    model: ClassVar[Any] = NotImplementedError
    history_types: ClassVar[str] = "+~-"
    lock_notifications: ClassVar[bool] = False
    max_attempts: ClassVar[int] = 5
    retry_base_delay: ClassVar[float] = 1.0
    retry_max_delay: ClassVar[float] = 300.0
    parked_blocks_object: ClassVar[bool] = True

    history: Any = None
    event: HistoryEvent | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("model", NotImplementedError) is NotImplementedError:
            return  # an abstract base channel: no model of its own
        registry.add_channel(cls)
        history_model = _history_model_or_none(cls.model)
        if history_model is not None and cls.__dict__.get("publishes", True):
            trigger = HistoryNotify(cls)
            _pgtrigger.register(trigger, history_model)
            registry.set_trigger(cls, trigger)
            order_history_of(cls.model, history_model)

    @classmethod
    def class_path(cls) -> str:
        """The dotted path of the channel class (``name()`` in django-pgpubsub)."""
        return str(cls.name())

    @classmethod
    def tracked_model(cls) -> type[models.Model]:
        model = cls.model
        if not (isinstance(model, type) and issubclass(model, models.Model)):
            raise ChannelConfigurationError(
                f"{cls.class_path()}.model must be a Django model class, not {model!r}"
            )
        return model

    @classmethod
    def history_model(cls) -> type[models.Model]:
        """The ``HistoricalX`` model of ``model``."""
        model = cls.tracked_model()
        if model._meta.proxy:
            raise ChannelConfigurationError(
                f"{cls.class_path()} publishes proxy model {model._meta.label}: "
                "django-simple-history does not record saves made through a proxy"
            )
        try:
            return history_model_of(model)
        except NotHistoricalModelError:
            raise ChannelConfigurationError(
                f"{cls.class_path()}: {model._meta.label} has no django-simple-history "
                "HistoricalRecords; add `history = HistoricalRecords()` to the model"
            ) from None

    @classmethod
    def listeners(cls) -> list[registry.Listener]:
        return registry.listeners_of(cls)

    @classmethod
    def build_from_payload(cls, notification_payload: Any, callbacks: Any) -> Any:
        raise ChannelConfigurationError(
            f"{cls.class_path()} is a history channel but django-pgpubsub's own listener is "
            "processing it: put 'pgpubsub_simplehistory' before 'pgpubsub' in INSTALLED_APPS so "
            "that `manage.py listen` is this package's command"
        )


def order_history_of(
    model: type[models.Model], history_model: type[models.Model], *, marked: bool = False
) -> None:
    """One ordering trigger per history table, whatever the number of its channels and
    subscriptions: ``marked`` once a durable subscription follows the model."""
    existing = _pgtrigger.trigger_named(history_model, HistoryOrder.name)
    if existing is not None:
        if existing.marked or not marked:
            return
        _pgtrigger.unregister(existing, history_model)
    _pgtrigger.register(HistoryOrder(model, marked=marked), history_model)


def _history_model_or_none(model: Any) -> type[models.Model] | None:
    if not (isinstance(model, type) and issubclass(model, models.Model)) or model._meta.proxy:
        return None
    try:
        return history_model_of(model)
    except NotHistoricalModelError:
        return None


def is_history_channel(channel: object) -> bool:
    return isinstance(channel, type) and issubclass(channel, HistoryTriggerChannel)


def locate(channel: str | type[Any]) -> type[Any] | None:
    """A history channel or a django-pgpubsub channel, from its class or its class path."""
    if isinstance(channel, type):
        return channel
    return registry.channel_by_path(channel) or locate_plain(channel)
