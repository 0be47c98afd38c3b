"""``manage.py pending_notifications``: what is stored and waiting, per channel and migration."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from pgpubsub_simplehistory.management._options import (
    DatabaseCommand,
    add_database_argument,
    check_database,
)
from pgpubsub_simplehistory.monitoring import held_back_by_channel, pending_notifications


class Command(DatabaseCommand):
    help = (
        "Show stored notifications waiting for a listener, per channel and per migration state "
        "recorded when the change happened. Use --fail-if-pending to gate a breaking migration "
        "on a drained queue. Exit status: 0, 1 with --fail-if-pending when any is pending, 2 "
        "when the database is unknown or unreachable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_argument(parser)
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        parser.add_argument(
            "--fail-if-pending",
            action="store_true",
            help="Exit with status 1 when any notification is pending.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        check_database(options["database"])
        groups = pending_notifications(options["database"])
        now = timezone.now()
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    [
                        {
                            "channel": g.channel,
                            "migration": str(g.migration) if g.migration else None,
                            "count": g.count,
                            "oldest": g.oldest.isoformat() if g.oldest else None,
                        }
                        for g in groups
                    ],
                    indent=2,
                )
            )
        elif not groups:
            self.stdout.write("No pending notifications.")
        else:
            self.stdout.write(
                f"{'channel':<50} {'pending':>8}  {'oldest':>10}  migration at change"
            )
            for g in groups:
                age = f"{(now - g.oldest).total_seconds():.0f}s" if g.oldest else "?"
                migration = str(g.migration) if g.migration else "(unknown)"
                self.stdout.write(f"{g.channel:<50} {g.count:>8}  {age:>10}  {migration}")
            # Pending that no worker takes while a parked notification blocks their object.
            for held in held_back_by_channel(options["database"]).values():
                self.stdout.write(f"{held.channel}: {held}")
        total = sum(g.count for g in groups)
        if options["fail_if_pending"] and total:
            raise CommandError(f"{total} notification(s) pending")
