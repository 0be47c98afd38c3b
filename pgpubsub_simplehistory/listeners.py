"""Subscribing listener functions to history channels: ``subscribe`` and the decorators.

A listener says which history types of a channel a function receives and which keyword
arguments it declares. Subscribing never changes the channel's trigger (what is stored depends on
the channel alone), and never raises at import time for a misdeclaration: the problem is kept in
the registry and reported by ``manage.py check`` (``pgpubsub_simplehistory.E007``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from . import registry
from .channels import is_history_channel, locate
from .registry import LISTENER_ARGUMENTS, Listener
from .subscriptions import HistorySubscription
from .subscriptions import locate as locate_subscription

F = TypeVar("F", bound=Callable[..., Any])


def subscribe(
    channel: type[Any] | str,
    callback: Callable[..., Any],
    history_types: frozenset[str] | str,
) -> Listener | None:
    """Subscribe ``callback`` to the history channel ``channel`` (a class or its class path),
    or to a durable subscription (a ``HistorySubscription`` class or its name), for the given
    history types (``'+'``, ``'~'``, ``'-'``).

    The decorators below call this; use it directly to subscribe a function you do not own.
    Returns the listener, or None when it cannot work: the reason is then reported by the
    system checks (``manage.py check``, and every ``manage.py listen`` on start).
    """
    types = frozenset(history_types)
    where = f"listener {_dotted(callback)}"
    durable = channel if isinstance(channel, type) else locate_subscription(channel)
    if isinstance(durable, type) and issubclass(durable, HistorySubscription):
        made = [subscribe(stream, callback, types) for stream in durable.streams()]
        return made[0] if made and all(made) else None
    channel_cls = locate(channel)
    if channel_cls is None:
        registry.add_problem(f"{where} subscribes to channel {channel!r}, which does not exist")
        return None
    if not is_history_channel(channel_cls):
        registry.add_problem(
            f"{where} subscribes to {_dotted(channel_cls)}, which is not a "
            "HistoryTriggerChannel; use django-pgpubsub's own decorators for its channels"
        )
        return None
    unknown = sorted(types - set(registry.HISTORY_TYPES))
    if unknown:
        registry.add_problem(f"{where}: unknown history type(s) {', '.join(unknown)}")
        return None
    arguments, problem = _accepted_arguments(channel_cls, callback)
    if problem:
        registry.add_problem(problem)
        return None
    return registry.add_listener(
        Listener(channel=channel_cls, callback=callback, history_types=types, arguments=arguments)
    )


def unsubscribe(channel: type[Any], callback: Callable[..., Any]) -> None:
    """Remove every listener of ``callback`` to ``channel`` (tests, plugins).

    The channel's trigger is unchanged: its changes are still stored.
    """
    if issubclass(channel, HistorySubscription):
        for stream in channel.streams():
            registry.remove_listeners(stream, callback)
        return
    registry.remove_listeners(channel, callback)


def _dotted(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _accepted_arguments(
    channel: type[Any], callback: Callable[..., Any]
) -> tuple[frozenset[str], str | None]:
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError) as exc:
        return frozenset(), f"cannot read the signature of listener {callback!r}: {exc}"
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return frozenset(LISTENER_ARGUMENTS), None
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
            return frozenset(), (
                f"listener {_dotted(callback)} of {channel.class_path()} requires argument "
                f"{parameter.name!r}; listeners receive keyword arguments from "
                f"{', '.join(LISTENER_ARGUMENTS)}"
            )
    return frozenset(accepted), None


def _decorator(history_types: str) -> Callable[[type[Any] | str], Callable[[F], F]]:
    def listener(channel: type[Any] | str) -> Callable[[F], F]:
        def register(callback: F) -> F:
            subscribe(channel, callback, history_types)
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
