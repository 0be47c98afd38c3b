"""``manage.py subscriptions list|rewind|pause|resume``: durable subscriptions, their positions."""

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


class Command(DatabaseCommand):
    help = (
        "List durable subscriptions with their position, lag (records and seconds) and state; "
        "rewind one to a date or a history id; pause or resume one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="action", required=True, metavar="{list,rewind,pause,resume}"
        )
        listing = sub.add_parser("list", help="show every subscription, one line per model")
        listing.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        add_database_argument(listing)
        rewind = sub.add_parser(
            "rewind", help="deliver again from a date or a history id (the next record first)"
        )
        rewind.add_argument("name", help="The subscription's name.")
        rewind.add_argument(
            "--to",
            required=True,
            metavar="DATE|ID",
            help="An ISO 8601 date or datetime (the first record recorded then or later, in "
            "history order), a history id (that record next), 'beginning' or 'now'.",
        )
        rewind.add_argument("--model", metavar="APP.MODEL", help="Only this model's position.")
        add_database_argument(rewind)
        for action, text in (
            ("pause", "stop delivering (the position stays; changes keep being recorded)"),
            ("resume", "deliver again after a pause or a stop"),
        ):
            p = sub.add_parser(action, help=text, description=text)
            p.add_argument("name", help="The subscription's name.")
            p.add_argument("--model", metavar="APP.MODEL", help="Only this model's position.")
            if action == "resume":
                p.add_argument(
                    "--accept-loss",
                    action="store_true",
                    help="Go on after history was deleted above the position before it was "
                    "delivered (what was deleted is lost to this subscription).",
                )
            add_database_argument(p)

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        check_database(using)
        action = options["action"]
        if action == "list":
            self._list(using, options["json"])
            return
        streams = self._streams(options["name"], options.get("model"))
        for stream in streams:
            if action == "pause":
                position = subscriptions.set_paused(stream, True, using)
                what = "paused"
            elif action == "resume":
                if options["accept_loss"]:
                    subscriptions.accept_loss(stream, using)
                position = subscriptions.set_paused(stream, False, using)
                if position.stopped:
                    raise CommandError(
                        f"{stream.name()} stays stopped: {position.stopped}", returncode=INVALID
                    )
                what = "resumed"
            else:
                to = options["to"]
                try:
                    value: Any = int(to) if to.isdigit() else to
                    target = subscriptions.start_position(stream, value, using)
                except ValueError as exc:
                    raise CommandError(f"--to: {exc}", returncode=INVALID) from None
                position = subscriptions.move(stream, target, using)
                what = f"rewound: the next record is the first above history id {target}"
            self.stdout.write(f"{stream.name()}: {what} (position {position.position})")

    def _streams(self, name: str, model: str | None) -> list[Any]:
        found = subscriptions.locate(name)
        if found is None:
            known = ", ".join(s.subscription_name() for s in registry.subscriptions())
            raise CommandError(
                f"no subscription named {name!r} (known: {known or 'none'})", returncode=INVALID
            )
        streams = found.streams()
        if model:
            streams = [s for s in streams if s.model._meta.label_lower == model.lower()]
            if not streams:
                raise CommandError(f"{name} does not follow {model}", returncode=INVALID)
        return streams

    def _list(self, using: str, as_json: bool) -> None:
        found = subscriptions.states(using)
        if as_json:
            self.stdout.write(
                json.dumps(
                    [
                        {
                            "subscription": s.subscription,
                            "model": s.model,
                            "state": s.state,
                            "position": s.position,
                            "last": s.last,
                            "behind": s.behind,
                            "lag_seconds": s.lag_seconds,
                            "stored": s.stored,
                            "stopped": s.stopped or None,
                        }
                        for s in found
                    ],
                    indent=2,
                )
            )
            return
        if not found:
            self.stdout.write("No subscriptions (declare a HistorySubscription).")
            return
        self.stdout.write(
            f"{'subscription':<28} {'model':<20} {'state':<12} {'position':>10} {'behind':>8} "
            f"{'lag':>8}  stored"
        )
        for s in found:
            lag = f"{s.lag_seconds:.0f}s" if s.lag_seconds is not None else "-"
            self.stdout.write(
                f"{s.subscription:<28} {s.model:<20} {s.state:<12} {s.position:>10} "
                f"{s.behind:>8} {lag:>8}  {s.stored}"
            )
            if s.stopped:
                self.stdout.write(f"  stopped: {s.stopped}")
