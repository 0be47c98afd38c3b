"""Settlement: how a notification ended (an ``Outcome``), what it means for the notification
(``RetryPolicy``), and the one record of it (``Settlement``) from which its log line and its
signal are made, once the transaction that settled it has committed.
"""

from __future__ import annotations

import copy
import enum
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import signals
from .exceptions import PgpubsubSimplehistoryError

logger = logging.getLogger("pgpubsub_simplehistory")


class Described(Exception):
    """An error this package made to say what happened (a failed COMMIT, a session the server
    ended, a statement it cancelled); its ``__cause__`` is what was raised."""


def exc_info(error: BaseException) -> tuple[type[BaseException], BaseException, Any]:
    """``exc_info`` for logging ``error`` with one traceback: where it was raised (for a
    :class:`Described` error, where its cause was), without the chain of exceptions behind it
    (a Django database error wraps the driver's, whose traceback ends in Django's cursor)."""
    shown = error.__cause__ if isinstance(error, Described) and error.__cause__ else error
    try:
        alone = copy.copy(shown)  # a copy has no __cause__, __context__ or __traceback__
    except Exception:
        alone = shown
    return type(shown), alone, shown.__traceback__


def format_traceback(error: BaseException) -> str:
    """The one traceback of ``error`` (see :func:`exc_info`) as text."""
    return "".join(traceback.format_exception(*exc_info(error)))


class Outcome(enum.Enum):
    """How one delivery of a notification ended."""

    #: The listeners ran; the notification is done.
    PROCESSED = "processed"
    #: A listener failed; the notification is due again after a delay.
    RETRY = "retry"
    #: It could not be resolved, or its attempts are exhausted: it waits for an operator.
    PARKED = "parked"
    #: A listener failed and nothing will retry it (non-lockable channels), or another worker
    #: settled it meanwhile.
    FAILED = "failed"


@dataclass(frozen=True)
class RetryPolicy:
    """When a failing notification is tried again, and when it is parked instead.

    Built from a channel's ``max_attempts``, ``retry_base_delay`` and ``retry_max_delay``.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0

    @classmethod
    def of(cls, channel: type[Any]) -> RetryPolicy:
        return cls(channel.max_attempts, channel.retry_base_delay, channel.retry_max_delay)

    def delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts: base * 2^(attempts-1), capped."""
        return float(min(self.base_delay * (2 ** max(attempts - 1, 0)), self.max_delay))

    def parks(self, attempts: int, error: BaseException | None = None) -> bool:
        """Whether a notification that failed ``attempts`` times with ``error`` is parked: at
        once when it cannot be resolved (this package's errors), else when attempts run out."""
        return isinstance(error, PgpubsubSimplehistoryError) or attempts >= self.max_attempts

    def after_death(self, attempts: int) -> float | None:
        """For a notification whose worker died during its ``attempts``-th attempt: the delay
        before it is due again, or ``None`` when it is parked."""
        return None if self.parks(attempts) else self.delay(attempts)


@dataclass(frozen=True)
class Settlement:
    """How one notification was settled: the data of its log line and of its signal."""

    channel: type[Any]
    outcome: Outcome
    model: str
    history_id: str
    history_type: str
    notification_id: int | None
    attempt: int
    duration: float
    error: BaseException | None = None
    #: Seconds until a retried notification is due again.
    retry_in: float | None = None
    #: Seconds from the change's insert to its listeners' start (database clock), when known.
    lag: float | None = None

    def arguments(self) -> dict[str, Any]:
        """The signal's keyword arguments (documented in ``signals``)."""
        return {
            "channel": self.channel.name(),
            "model": self.model,
            "history_id": self.history_id,
            "history_type": self.history_type,
            "notification_id": self.notification_id,
            "attempt": self.attempt,
            "duration": self.duration,
            "error": self.error,
        }

    def log_fields(self) -> dict[str, Any]:
        """The ``extra`` of the log line: the same fields, for structured log formatters."""
        fields = self.arguments()
        del fields["duration"], fields["error"]
        fields["duration_ms"] = round(self.duration * 1000, 3)
        fields["outcome"] = self.outcome.value
        if self.lag is not None:
            fields["lag_ms"] = round(self.lag * 1000, 3)
        return fields

    def where(self) -> str:
        """Which notification, for log lines."""
        text = f"channel {self.channel.name()} model {self.model} history_id={self.history_id}"
        if self.notification_id is not None:
            text += f" (notification {self.notification_id}, attempt {self.attempt})"
        return text


_SIGNALS = {
    Outcome.PROCESSED: signals.notification_processed,
    Outcome.RETRY: signals.notification_failed,
    Outcome.FAILED: signals.notification_failed,
    Outcome.PARKED: signals.notification_parked,
}


def announce(settlements: Sequence[Settlement]) -> None:
    """Log each settlement and send its signal: call once its transaction has committed."""
    for settled in settlements:
        _log(settled)
        signal = _SIGNALS[settled.outcome]
        if signal.has_listeners(settled.channel):
            # send_robust: a failing receiver is logged by Django (logger django.dispatch).
            signal.send_robust(settled.channel, **settled.arguments())


def _log(settled: Settlement) -> None:
    if settled.outcome is Outcome.PROCESSED:
        if logger.isEnabledFor(logging.DEBUG):  # the hot path: build the line only when logged
            logger.debug(
                "processed %s type=%s in %.1f ms",
                settled.where(),
                settled.history_type,
                settled.duration * 1000,
                extra=settled.log_fields(),
            )
    elif isinstance(settled.error, PgpubsubSimplehistoryError):
        parked = "; parked" if settled.outcome is Outcome.PARKED else ""
        logger.error(
            "cannot process %s: %s%s",
            settled.where(),
            settled.error,
            parked,
            extra=settled.log_fields(),
        )
    else:
        if settled.outcome is Outcome.PARKED:
            what = f"parked after {settled.attempt} attempts"
        elif settled.outcome is Outcome.RETRY:
            what = f"rolled back, retry in {settled.retry_in or 0:.1f}s"
        else:
            what = "its changes were rolled back"
        error = settled.error
        logger.error(
            "listener failed for %s: %s; %s",
            settled.where(),
            _first_line(error),
            what,
            exc_info=exc_info(error) if error is not None else None,
            extra=settled.log_fields(),
        )


def _first_line(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
