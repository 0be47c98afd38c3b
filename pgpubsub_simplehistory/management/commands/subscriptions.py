"""``manage.py subscriptions list|watch|rewind|pause|resume``: durable subscriptions and their
positions."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from pgpubsub_simplehistory import registry, subscriptions
from pgpubsub_simplehistory.management._options import (
    INVALID,
    DatabaseCommand,
    add_database_argument,
    check_database,
)
from pgpubsub_simplehistory.progress import Progress, is_tty


class Command(DatabaseCommand):
    help = (
        "List durable subscriptions with their position, lag (records and seconds) and state; "
        "rewind one to a date or a history id; pause or resume one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="action", required=True, metavar="{list,watch,rewind,pause,resume}"
        )
        listing = sub.add_parser("list", help="show every subscription, one line per model")
        listing.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        add_database_argument(listing)
        watch = sub.add_parser(
            "watch",
            help="show a progress bar (position, rate, time left) until it is live",
            description="Show how a subscription catches up until it is live (exit 0); exit 1 "
            "when it is paused or stopped, or still behind after --timeout.",
        )
        watch.add_argument("name", help="The subscription's name.")
        watch.add_argument("--model", metavar="APP.MODEL", help="Only this model's position.")
        watch.add_argument(
            "--interval", type=float, default=1.0, help="Seconds between readings (default 1)."
        )
        watch.add_argument(
            "--timeout", type=float, default=None, help="Give up after this many seconds."
        )
        add_database_argument(watch)
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
        if action == "watch":
            self._watch(streams, using, options)
            return
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

    def _watch(self, streams: list[Any], using: str, options: dict[str, Any]) -> None:
        interval, timeout = options["interval"], options["timeout"]
        if interval <= 0:
            raise CommandError("--interval must be positive", returncode=INVALID)
        started = time.monotonic()
        origin = {s: subscriptions.state_of(s, using).position for s in streams}
        terminal = is_tty(self.stderr)
        bar = Progress(self.stderr, 1) if terminal and options["verbosity"] > 0 else None
        last_line = 0.0
        while True:
            found = [subscriptions.state_of(s, using) for s in streams]
            halted = [f for f in found if f.state in ("paused", "stopped")]
            done = sum(subscriptions.delivered_since(s, origin[s], using) for s in streams)
            behind = sum(f.behind for f in found)
            rates = [f.rate for f in found if f.rate is not None]
            rate = sum(rates) if rates else None
            note = f"{_rate(rate)} records/s, {_seconds(behind / rate if rate else None)} left"
            now = time.monotonic()
            if bar is not None:
                bar.show(done, done + behind, note)
            elif options["verbosity"] > 0 and (now - last_line >= 5 or not behind or halted):
                last_line = now
                self.stderr.write(f"{done}/{done + behind} records, {note}")
            if halted or not behind:
                break
            if timeout is not None and now - started > timeout:
                if bar is not None:
                    bar.finish()
                raise CommandError(
                    f"{options['name']}: still {behind} records behind after {timeout:g}s"
                )
            time.sleep(interval)
        if bar is not None:
            bar.finish()
        for f in halted:
            why = f.stopped or "`subscriptions resume` goes on"
            raise CommandError(f"{f.subscription} [{f.model}] is {f.state}: {why}")
        for f in found:
            self.stdout.write(f"{f.subscription} [{f.model}]: live at position {f.position}")

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
                            "rate": s.rate,
                            "eta_seconds": s.eta_seconds,
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
            f"{'lag':>8} {'rate/s':>8} {'eta':>8}  stored"
        )
        for s in found:
            self.stdout.write(
                f"{s.subscription:<28} {s.model:<20} {s.state:<12} {s.position:>10} "
                f"{s.behind:>8} {_seconds(s.lag_seconds):>8} {_rate(s.rate):>8} "
                f"{_seconds(s.eta_seconds):>8}  {s.stored}"
            )
            if s.stopped:
                self.stdout.write(f"  stopped: {s.stopped}")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"
