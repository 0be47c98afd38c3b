"""``manage.py listener_health``: a probe for pending/parked backlog and the NOTIFY queue."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from pgpubsub_simplehistory.management._options import (
    DatabaseCommand,
    add_database_argument,
    check_database,
)
from pgpubsub_simplehistory.monitoring import check_health, held_back_by_channel


class Command(DatabaseCommand):
    help = (
        "Print pending and parked notifications per channel, the age of the oldest pending one "
        "and pg_notification_queue_usage(); exit 1 when a given threshold is exceeded (usable "
        "as a readiness probe or an alert), 2 when the database is unknown or unreachable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-pending",
            type=int,
            metavar="N",
            help="Exit 1 when a channel has more than N pending notifications.",
        )
        parser.add_argument(
            "--max-age",
            type=float,
            metavar="SECONDS",
            help="Exit 1 when a channel's oldest pending notification is older than this.",
        )
        parser.add_argument(
            "--max-parked",
            type=int,
            metavar="N",
            help="Exit 1 when a channel has more than N parked notifications.",
        )
        parser.add_argument(
            "--max-queue-usage",
            type=float,
            metavar="FRACTION",
            help="Exit 1 when pg_notification_queue_usage() (the 8 GB NOTIFY queue, 0..1) is "
            "above this.",
        )
        parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")
        add_database_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        check_database(options["database"])
        health = check_health(
            max_pending=options["max_pending"],
            max_age=options["max_age"],
            max_parked=options["max_parked"],
            max_queue_usage=options["max_queue_usage"],
            using=options["database"],
        )
        held = {h.channel: h for h in held_back_by_channel(options["database"]).values()}
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "ok": health.ok,
                        "notify_queue_usage": health.notify_queue_usage,
                        "channels": [
                            {
                                "channel": c.channel,
                                "pending": c.pending,
                                "parked": c.parked,
                                "oldest_pending_age": c.oldest_pending_age,
                                "held_back": held[c.channel].held_back if c.channel in held else 0,
                                "held_back_by": [
                                    {"parked_id": b.parked_id, "object_id": b.object_id}
                                    for b in (held[c.channel].blockers if c.channel in held else [])
                                ],
                            }
                            for c in health.channels
                        ],
                        "problems": health.problems,
                    },
                    indent=2,
                )
            )
        else:
            for c in health.channels:
                age = f"{c.oldest_pending_age:.0f}s" if c.oldest_pending_age is not None else "-"
                line = f"{c.channel}: pending {c.pending}, parked {c.parked}, oldest pending {age}"
                if c.channel in held:  # pending that no worker takes: say why
                    line += f"; {held[c.channel]}"
                self.stdout.write(line)
            self.stdout.write(f"NOTIFY queue usage: {health.notify_queue_usage:.6f}")
        if not health.ok:
            raise CommandError("; ".join(health.problems), returncode=1)
