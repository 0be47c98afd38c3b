"""Dispatch: call the listeners subscribed to a change's channel and history type.

One definition for the worker and for replay. An ``async def`` listener is run to completion
here (``asgiref.async_to_sync``): its ORM calls come back to this thread, on this connection,
inside the notification's transaction like a sync listener's.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Sequence
from typing import Any

from asgiref.sync import async_to_sync

from .registry import Listener
from .resolution import ResolvedChange


def dispatch(change: ResolvedChange, listeners: Sequence[Listener] | None = None) -> int:
    """Call each listener (default: every one of the channel's) that accepts the change's
    history type, with the keyword arguments it declares. Returns how many were called."""
    called = 0
    history_type = change.event.history_type
    for listener in change.channel.listeners() if listeners is None else listeners:
        if listener.accepts(history_type):
            call(listener, change)
            called += 1
    return called


def call(listener: Listener, change: ResolvedChange) -> Any:
    """Call one listener with the arguments it declares; await it when it is a coroutine."""
    kwargs = {name: getattr(change, name) for name in listener.arguments}
    result = listener.callback(**kwargs)
    if inspect.isawaitable(result):
        result = async_to_sync(_await)(result)
    return result


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
