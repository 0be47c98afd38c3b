"""``manage.py listener_health``: a probe for pending/parked backlog and the NOTIFY queue."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from pgpubsub_simplehistory import registry, subscriptions
from pgpubsub_simplehistory.management._options import (
    INVALID,
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
        parser.add_argument(
            "--max-lag-records",
            type=int,
            metavar="N",
            help="Exit 1 when a durable subscription has more than N history records to "
            "deliver (per model).",
        )
        parser.add_argument(
            "--max-lag-seconds",
            type=float,
            metavar="SECONDS",
            help="Exit 1 when a durable subscription's oldest undelivered record is older than "
            "this, or when one is stopped.",
        )
        parser.add_argument(
            "--subscription",
            action="append",
            metavar="NAME",
            help="Apply --max-lag-records/--max-lag-seconds to this subscription only "
            "(repeatable; run one probe per subscription for thresholds of its own).",
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
        followed = subscriptions.states(options["database"])
        wanted = options["subscription"]
        if wanted:
            known = {s.subscription_name() for s in registry.subscriptions()}
            unknown = sorted(set(wanted) - known)
            if unknown:
                raise CommandError(f"no subscription named {unknown[0]!r}", returncode=INVALID)
        problems = list(health.problems)
        for state in followed:
            if wanted and state.subscription not in wanted:
                continue
            where = f"subscription {state.subscription} [{state.model}]"
            limit = options["max_lag_records"]
            if limit is not None and state.behind > limit:
                problems.append(f"{where}: {state.behind} records behind > {limit}")
            seconds = options["max_lag_seconds"]
            if (
                seconds is not None
                and state.lag_seconds is not None
                and state.lag_seconds > seconds
            ):
                problems.append(f"{where}: {state.lag_seconds:.0f}s behind > {seconds:g}s")
            if seconds is not None and state.stopped:
                problems.append(f"{where}: stopped: {state.stopped}")
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
                        "subscriptions": [
                            {
                                "subscription": f.subscription,
                                "model": f.model,
                                "state": f.state,
                                "behind": f.behind,
                                "lag_seconds": f.lag_seconds,
                            }
                            for f in followed
                        ],
                        "problems": problems,
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
            for f in followed:
                lag = f"{f.lag_seconds:.0f}s" if f.lag_seconds is not None else "-"
                self.stdout.write(
                    f"subscription {f.subscription} [{f.model}]: {f.state}, {f.behind} records "
                    f"behind, oldest undelivered {lag}"
                )
            self.stdout.write(f"NOTIFY queue usage: {health.notify_queue_usage:.6f}")
        if problems:
            raise CommandError("; ".join(problems), returncode=1)
