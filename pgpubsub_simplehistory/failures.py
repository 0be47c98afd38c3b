"""What went wrong when notifications ran: the errors a failure is described by, and which
notification of a batch it belongs to.

A listener's own exception is its failure. The others are described by errors of this module
(``Described``: their ``__cause__`` is what was raised): a COMMIT that failed (a deferred
constraint), a session the server ended (naming ``idle_in_transaction_session_timeout`` when a
listener outran it), a statement the server cancelled (``statement_timeout``, ``lock_timeout``).
In a batch run in one transaction, :func:`blame` says which notification a failure belongs to,
or that it cannot tell (then each runs alone).
"""

from __future__ import annotations

import time
from typing import Any

from django.db import DatabaseError, InterfaceError, connections

from .settlement import Described


class TransactionLeftAborted(Exception):
    """A listener returned normally but left its transaction unusable (it caught a database
    error without rolling back to a savepoint of its own)."""


LEFT_ABORTED = (
    "the listener returned, but its transaction was aborted by a database error it caught; "
    "wrap the statements that may fail in transaction.atomic()"
)


class CommitFailed(Described):
    """The listeners ran, but the transaction failed at COMMIT (a deferred constraint)."""


class SessionEnded(Described):
    """The server ended the database session while the notification ran (a timeout such as
    ``idle_in_transaction_session_timeout``, an administrator, a restart)."""


class StatementCancelled(Described):
    """The server cancelled a statement of the listeners (``statement_timeout``,
    ``lock_timeout``, ``pg_cancel_backend``); the session goes on."""


class WorkerDied(Exception):
    """The worker that claimed a notification ended without settling it."""


def classify(exc: Exception, ran: bool, using: str, seconds: float) -> BaseException:
    """What went wrong: the session, the COMMIT, or the listener (``exc`` itself)."""
    if session_lost(exc) or not usable(using):
        connections[using].close()  # the next statement opens a new session
        ended = SessionEnded(
            f"session terminated by the server: {_first_line(exc)}{_timeout_hint(using, seconds)}"
        )
        ended.__cause__ = exc
        return ended
    if ran:
        failed = CommitFailed(f"commit failed: {type(exc).__name__}: {_first_line(exc)}")
        failed.__cause__ = exc
        return failed
    cancelled = sqlstate(exc) in _CANCELLED
    if cancelled:
        stopped = StatementCancelled(
            f"statement cancelled by the server: {_first_line(exc)}{_cancel_hint(exc, using)}"
        )
        stopped.__cause__ = exc
        return stopped
    return exc


#: SQLSTATEs of a statement the server cancelled: query_canceled (statement_timeout,
#: pg_cancel_backend) and lock_not_available (lock_timeout).
_CANCELLED = {"57014": "statement_timeout", "55P03": "lock_timeout"}


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of ``exc`` or of the driver error it wraps."""
    for error in (exc, exc.__cause__):
        code = _code(error)
        if code:
            return str(code)
    return None


def _code(error: BaseException | None) -> Any:
    """One error's SQLSTATE as its driver names it: psycopg2 ``pgcode``, psycopg 3 ``sqlstate``."""
    return getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)


def _cancel_hint(exc: BaseException, using: str) -> str:
    """The setting that cancelled it, as the worker's sessions have it (the transaction has
    rolled back: the session answers)."""
    setting = _CANCELLED[str(sqlstate(exc))]
    try:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT current_setting(%s)", [setting])
            shown = str(cursor.fetchone()[0])
    except Exception:
        return ""
    if shown in ("0", "0ms"):
        return f" ({setting} is off on the worker's sessions: set by the listener, or cancelled)"
    return f" ({setting} = {shown} on the worker's sessions)"


#: SQLSTATEs of a session the server ends: idle_in_transaction_session_timeout, operator
#: intervention (admin shutdown, crash shutdown, cannot connect now, idle_session_timeout) and
#: the connection exceptions (class 08).
_SESSION_ENDED = ("25P03", "57P01", "57P02", "57P03", "57P05")


def session_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or the driver error it wraps) says the database session is gone. Django
    may have opened a new session already when the error reaches us, so the error is what
    tells: its SQLSTATE (psycopg 3 reports the server's reason, as IdleInTransactionSession-
    Timeout, AdminShutdown...), or for psycopg2 an OperationalError without one ("server
    closed the connection unexpectedly")."""
    for error in (exc, exc.__cause__):
        if error is None:
            continue
        code = _code(error)
        if code is not None and (code in _SESSION_ENDED or str(code).startswith("08")):
            return True
        name = type(error).__name__
        if name == "InterfaceError" or (name == "OperationalError" and code is None):
            if isinstance(error, DatabaseError | InterfaceError) and error.__cause__ is not None:
                continue  # Django's wrapper: the driver's error decides
            return True
    return False


def _timeout_hint(using: str, seconds: float) -> str:
    """Which server setting likely ended the session (libpq often reports only that the server
    closed the connection): asked of the new session, which has the same settings."""
    limit, shown = _idle_setting(using)
    if 0 < limit < seconds:
        return (
            f" (the listener ran {seconds:.1f}s with its transaction open, longer than "
            f"idle_in_transaction_session_timeout = {shown})"
        )
    return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def usable(using: str) -> bool:
    wrapper = connections[using]
    try:
        return wrapper.connection is not None and wrapper.is_usable()
    except Exception:
        return False


#: libpq's PQTRANS_INERROR (psycopg2 and psycopg expose it as ``connection.info``).
_PQTRANS_INERROR = 3


def transaction_aborted(using: str) -> bool:
    wrapper = connections[using]
    if wrapper.needs_rollback:
        return True
    info = getattr(wrapper.connection, "info", None)
    return getattr(info, "transaction_status", None) == _PQTRANS_INERROR


def describe(error: BaseException) -> str:
    """The ``last_error`` of a failure."""
    if isinstance(error, Described):
        return str(error)
    return f"{type(error).__name__}: {error}"


def blame(
    exc: Exception,
    ran: list[tuple[Any, Any, float, float]],
    running_now: tuple[Any, Any, float] | None,
    using: str,
) -> tuple[Any, Any, float, float] | None:
    """The notification of a failed batch transaction whose failure ``exc`` is: the one whose
    listener raised (not a deadlock or a serialization failure: those are the batch's, they go
    one by one). When the server ended the session for being idle in its transaction: the gap
    ended where the failing statement began, so in the listener running then or in the one
    before it; that one is blamed if it alone ran longer than
    ``idle_in_transaction_session_timeout``. None when it cannot tell."""
    now = time.perf_counter()
    lost = session_lost(exc) or not usable(using)
    if not lost:
        if running_now is None or sqlstate(exc) in NOT_PINNED:
            return None
        channel, row, started = running_now
        return channel, row, started, now - started
    connections[using].close()  # the next statement opens a new session
    limit, _ = _idle_setting(using)
    adjacent = []
    if running_now is not None:
        channel, row, started = running_now
        adjacent.append((channel, row, started, now - started))
    if ran:
        adjacent.append(ran[-1])
    return next((c for c in adjacent if 0 < limit <= c[3]), None)


#: SQLSTATEs of failures that come from running notifications together (locks they hold),
#: not from one of them: deadlock_detected, serialization_failure.
NOT_PINNED = ("40P01", "40001")


def _idle_setting(using: str) -> tuple[float, str]:
    """``idle_in_transaction_session_timeout`` of the worker's sessions: in seconds (0: off, or
    unknown) and as the server shows it."""
    try:
        with connections[using].cursor() as cursor:
            cursor.execute(
                "SELECT setting::float / 1000, current_setting(name) FROM pg_settings "
                "WHERE name = 'idle_in_transaction_session_timeout'"
            )
            limit, shown = cursor.fetchone()
            return float(limit), str(shown)
    except Exception:
        return 0.0, ""
