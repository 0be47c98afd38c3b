"""The registry of history channels, their listeners and their triggers.

A leaf: it imports nothing else from this package, and every other module reads channels and
listeners from here. A channel is registered when its class is declared (``channels.py``),
its trigger at the same time, and a listener when a function is subscribed
(``listeners.py``). A channel is known by its *class path* (``shop.channels.OrderChannel``)
and by its *listen name* (the Postgres channel, ``pgpubsub_1a2b3``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: Keyword arguments a listener may declare; it receives those it declares (all with ``**kw``).
LISTENER_ARGUMENTS = ("old", "new", "history", "event", "context")

#: The history types of django-simple-history: insert, update, delete.
HISTORY_TYPES = ("+", "~", "-")


@dataclass(frozen=True)
class Listener:
    """One listener function subscribed to one history channel for some history types.

    Attributes:
        channel: The channel class.
        callback: The listener function.
        history_types: The history types (``'+'``, ``'~'``, ``'-'``) it receives.
        arguments: The keyword arguments it declares, among :data:`LISTENER_ARGUMENTS`.
    """

    channel: type[Any]
    callback: Callable[..., Any]
    history_types: frozenset[str]
    arguments: frozenset[str]

    @property
    def name(self) -> str:
        """The listener's dotted path."""
        return f"{self.callback.__module__}.{self.callback.__qualname__}"

    def accepts(self, history_type: str) -> bool:
        return history_type in self.history_types


_channels: dict[str, type[Any]] = {}  # by listen name, in declaration order
_listeners: dict[type[Any], list[Listener]] = {}
_triggers: dict[type[Any], Any] = {}
_subscriptions: list[type[Any]] = []  # durable subscriptions, in declaration order
_problems: list[str] = []  # listeners that could not be made (reported by the checks)


def add_channel(channel: type[Any]) -> None:
    """Register a history channel class (a redeclared class replaces the earlier one)."""
    _channels[channel.listen_safe_name()] = channel


def remove_channel(channel: type[Any]) -> None:
    """Forget a channel, its listeners and its trigger (tests, plugins)."""
    if _channels.get(channel.listen_safe_name()) is channel:
        del _channels[channel.listen_safe_name()]
    _listeners.pop(channel, None)
    _triggers.pop(channel, None)


def channels() -> list[type[Any]]:
    """Every declared history channel, in declaration order."""
    return list(_channels.values())


def channels_with_listeners() -> list[type[Any]]:
    """The declared history channels with at least one listener in this process."""
    return [channel for channel in _channels.values() if _listeners.get(channel)]


def channel_by_listen_name(name: str) -> type[Any] | None:
    return _channels.get(name)


def channel_by_path(path: str) -> type[Any] | None:
    """The declared channel whose class path is ``path``."""
    return next((c for c in _channels.values() if f"{c.__module__}.{c.__qualname__}" == path), None)


def add_listener(listener: Listener) -> Listener:
    """Register ``listener``; the same callback for the same types is registered once."""
    existing = _listeners.setdefault(listener.channel, [])
    for known in existing:
        if known.callback is listener.callback and (known.history_types == listener.history_types):
            return known
    existing.append(listener)
    return listener


def remove_listeners(channel: type[Any], callback: Callable[..., Any]) -> None:
    _listeners[channel] = [s for s in _listeners.get(channel, []) if s.callback is not callback]


def listeners_of(channel: type[Any]) -> list[Listener]:
    return list(_listeners.get(channel, ()))


def add_subscription(subscription: type[Any]) -> None:
    """Register a durable subscription (its streams register as channels without triggers)."""
    name = subscription.subscription_name()
    _subscriptions[:] = [s for s in _subscriptions if s.subscription_name() != name]
    _subscriptions.append(subscription)
    for stream in subscription.streams():
        add_channel(stream)


def subscriptions() -> list[type[Any]]:
    """Every declared durable subscription."""
    return list(_subscriptions)


def add_problem(message: str) -> None:
    """Keep a declaration that cannot work, for the system checks to report."""
    if message not in _problems:
        _problems.append(message)


def problems() -> list[str]:
    return list(_problems)


def set_trigger(channel: type[Any], trigger: Any) -> None:
    _triggers[channel] = trigger


def trigger_of(channel: type[Any]) -> Any | None:
    """The channel's trigger (None when its model has no history table to put it on)."""
    return _triggers.get(channel)


@contextmanager
def isolated() -> Iterator[None]:
    """Restore the registry as it was on exit (tests that declare channels of their own)."""
    saved = dict(_channels), {k: list(v) for k, v in _listeners.items()}, dict(_triggers)
    saved_problems = list(_problems)
    saved_subscriptions = list(_subscriptions)
    try:
        yield
    finally:
        _problems[:] = saved_problems
        _subscriptions[:] = saved_subscriptions
        _channels.clear()
        _channels.update(saved[0])
        _listeners.clear()
        _listeners.update(saved[1])
        _triggers.clear()
        _triggers.update(saved[2])
