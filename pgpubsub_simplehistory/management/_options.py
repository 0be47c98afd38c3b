"""What the operations commands (``replay_history``, ``parked``, ``listener_health``,
``pending_notifications``) share: ``--database``, and bad input as one line on stderr.

Exit status 2 means "invalid request, nothing done": an alias that is not in
``settings.DATABASES``, a database that does not accept connections, or (in each command) a
model, channel or id that does not exist. Django prints a ``CommandError`` as one line
(``CommandError: ...``) and exits with its ``returncode``; ``--traceback`` shows the original
error instead.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import django
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, connections

#: Exit status of an invalid request (nothing was done).
INVALID = 2

_DATABASE_ERRORS = (DatabaseError, InterfaceError)


def add_database_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--database",
        default=DEFAULT_DB_ALIAS,
        metavar="ALIAS",
        help="The database to work on: an alias of settings.DATABASES (default 'default').",
    )


def version() -> str:
    """What ``--version`` prints: this library's version (and Django's)."""
    try:
        ours = metadata.version("pgpubsub-simplehistory")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        ours = "unknown"
    return f"pgpubsub-simplehistory {ours} (Django {django.get_version()})"


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (drivers spread theirs over several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def describe(alias: str) -> str:
    """``'default' (mysite on localhost:5432)``: which server an alias points at."""
    settings = connections.settings[alias]
    host = settings.get("HOST") or "localhost"
    port = f":{settings['PORT']}" if settings.get("PORT") else ""
    return f"{alias!r} ({settings.get('NAME') or '?'} on {host}{port})"


def check_database(alias: str) -> None:
    """Raise a one-line ``CommandError`` (exit status 2) unless ``alias`` is configured and
    its database accepts a connection."""
    configured = list(connections)
    if alias not in configured:
        raise CommandError(
            f"unknown --database {alias!r}: settings.DATABASES has "
            f"{', '.join(repr(a) for a in configured)}",
            returncode=INVALID,
        )
    try:
        connections[alias].ensure_connection()
    except _DATABASE_ERRORS as exc:
        raise CommandError(
            f"database {describe(alias)} is unreachable: {one_line(exc)}", returncode=INVALID
        ) from None


class DatabaseCommand(BaseCommand):
    """A command with ``--database``. Its ``handle`` starts with :func:`check_database` (after
    the system checks ran: a misconfiguration is reported first); a database error after that
    is one line and exit status 1 (part of the work may have been done) rather than a
    traceback. ``--version`` prints this library's version."""

    def get_version(self) -> str:
        return version()

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except _DATABASE_ERRORS as exc:
            if options.get("traceback"):
                raise
            alias = options.get("database") or DEFAULT_DB_ALIAS
            raise CommandError(
                f"database {describe(alias)} failed: {one_line(exc)}", returncode=1
            ) from None
