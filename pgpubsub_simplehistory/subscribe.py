"""Subscribing listener functions to history channels (the ``*_listener`` decorators)."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pgtrigger
from asgiref.sync import async_to_sync
from pgpubsub.channel import locate_channel

from . import _pgpubsub
from .channel import HistoryTriggerChannel, is_history_channel
from .exceptions import ChannelConfigurationError
from .trigger import HistoryNotify

if TYPE_CHECKING:
    from .resolution import ResolvedChange

F = TypeVar("F", bound=Callable[..., Any])

#: Keyword arguments a listener may declare; it receives those it declares (all with ``**kw``).
LISTENER_ARGUMENTS = ("old", "new", "history", "event", "context")

_subscriptions: defaultdict[type[HistoryTriggerChannel], list[Subscription]] = defaultdict(list)
_triggers: dict[type[HistoryTriggerChannel], HistoryNotify] = {}


@dataclass(frozen=True)
class Subscription:
    """One listener function subscribed to one channel for some history types."""

    channel: type[HistoryTriggerChannel]
    callback: Callable[..., Any]
    history_types: frozenset[str]
    arguments: frozenset[str]

    @property
    def name(self) -> str:
        return f"{self.callback.__module__}.{self.callback.__qualname__}"

    def accepts(self, history_type: str) -> bool:
        return history_type in self.history_types

    def call(self, change: ResolvedChange) -> Any:
        """Call the listener; an ``async def`` listener is run to completion here.

        The coroutine runs on an event loop in another thread (``asgiref.async_to_sync``), while
        its ORM calls (``sync_to_async`` / ``aget`` / ``asave`` ...) come back to this thread, on
        this connection: inside the notification's savepoint, like a sync listener's.
        """
        kwargs = {name: getattr(change, name) for name in self.arguments}
        result = self.callback(**kwargs)
        if inspect.isawaitable(result):
            result = async_to_sync(_await)(result)
        return result


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def subscriptions_of(channel: type[HistoryTriggerChannel]) -> list[Subscription]:
    return list(_subscriptions.get(channel, ()))


def trigger_of(channel: type[HistoryTriggerChannel]) -> HistoryNotify | None:
    """The trigger registered for ``channel`` (None before its first subscription)."""
    return _triggers.get(channel)


def history_channels() -> list[type[HistoryTriggerChannel]]:
    """Every history channel with at least one subscription."""
    return [channel for channel, subs in _subscriptions.items() if subs]


def subscribe(
    channel: type[HistoryTriggerChannel] | str,
    callback: Callable[..., Any],
    history_types: frozenset[str],
) -> Subscription:
    """Subscribe ``callback`` to ``channel`` for the given history types.

    The decorators below call this; use it directly to subscribe a function you do not own.
    Registers the channel's trigger on the history model the first time.
    """
    channel_cls = locate_channel(channel)
    if not is_history_channel(channel_cls):
        raise ChannelConfigurationError(
            f"{channel_cls!r} is not a HistoryTriggerChannel; use django-pgpubsub's own "
            "decorators for its channels"
        )
    history_model = channel_cls.history_model()
    subscription = Subscription(
        channel=channel_cls,
        callback=callback,
        history_types=history_types,
        arguments=_accepted_arguments(channel_cls, callback),
    )
    existing = _subscriptions[channel_cls]
    if not any(s.callback is callback and s.history_types == history_types for s in existing):
        existing.append(subscription)
    if channel_cls not in _triggers:
        trigger = HistoryNotify(channel_cls)
        pgtrigger.register(trigger)(history_model)
        _triggers[channel_cls] = trigger
    _pgpubsub.register_callback(channel_cls, callback)
    return subscription


def unsubscribe(channel: type[HistoryTriggerChannel], callback: Callable[..., Any]) -> None:
    """Remove every subscription of ``callback`` to ``channel`` (tests, plugins).

    The channel's trigger keeps the history types it was migrated with.
    """
    _subscriptions[channel] = [s for s in _subscriptions[channel] if s.callback is not callback]
    _pgpubsub.unregister_callback(channel, callback)


def _accepted_arguments(
    channel: type[HistoryTriggerChannel], callback: Callable[..., Any]
) -> frozenset[str]:
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError) as exc:
        raise ChannelConfigurationError(
            f"cannot read the signature of listener {callback!r}: {exc}"
        ) from None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return frozenset(LISTENER_ARGUMENTS)
    accepted = set()
    for parameter in parameters:
        if parameter.name in LISTENER_ARGUMENTS and parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            accepted.add(parameter.name)
        elif parameter.default is inspect.Parameter.empty and parameter.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
        ):
            raise ChannelConfigurationError(
                f"listener {callback.__module__}.{callback.__qualname__} of {channel.name()} "
                f"requires argument {parameter.name!r}; listeners receive keyword arguments "
                f"from {', '.join(LISTENER_ARGUMENTS)}"
            )
    return frozenset(accepted)


def _decorator(
    history_types: str,
) -> Callable[[type[HistoryTriggerChannel] | str], Callable[[F], F]]:
    types = frozenset(history_types)

    def listener(channel: type[HistoryTriggerChannel] | str) -> Callable[[F], F]:
        def register(callback: F) -> F:
            subscribe(channel, callback, types)
            return callback

        return register

    return listener


post_save_listener = _decorator("+~")
post_save_listener.__doc__ = "Subscribe to inserts and updates (history types '+' and '~')."
post_insert_listener = _decorator("+")
post_insert_listener.__doc__ = "Subscribe to inserts (history type '+'): ``old`` is None."
post_update_listener = _decorator("~")
post_update_listener.__doc__ = "Subscribe to updates (history type '~')."
post_delete_listener = _decorator("-")
post_delete_listener.__doc__ = "Subscribe to deletes (history type '-'): ``new`` is None."
