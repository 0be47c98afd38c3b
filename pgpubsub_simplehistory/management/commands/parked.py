"""``manage.py parked list|retry|purge``: notifications whose listeners kept failing."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from pgpubsub_simplehistory import parking
from pgpubsub_simplehistory.management._options import (
    INVALID,
    DatabaseCommand,
    add_database_argument,
    check_database,
)
from pgpubsub_simplehistory.progress import add_progress_arguments, progress_bar

ACTIONS = {
    "list": "Show parked notifications (all of them, or those selected).",
    "retry": "Make the selected parked notifications pending again (attempts reset, due now).",
    "purge": "Delete the selected parked notifications (their history records stay: "
    "replay_history can deliver them again).",
}


class Command(DatabaseCommand):
    help = (
        "List, retry or purge parked notifications of history channels. A parked notification "
        "holds back later changes of the same object (unless its channel sets "
        "parked_blocks_object = False) until it is retried or purged. Exit status: 0 done "
        "(also when the selection matched nothing: a 'nothing matched' line says so), 1 purge "
        "cancelled or the database failed, 2 invalid request (nothing done)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{list,retry,purge}")
        for action, text in ACTIONS.items():
            p = sub.add_parser(action, help=text, description=text)
            p.add_argument(
                "--channel",
                nargs="+",
                default=[],
                metavar="CHANNEL",
                help="Only notifications of these history channels (class paths, "
                "e.g. shop.channels.OrderChannel).",
            )
            p.add_argument(
                "--model",
                nargs="+",
                default=[],
                metavar="APP.MODEL",
                help="Only notifications of these tracked models (e.g. shop.Order).",
            )
            p.add_argument(
                "--id",
                nargs="+",
                type=int,
                default=[],
                dest="ids",
                metavar="ID",
                help="Only these notifications, by the id 'parked list' shows; an id that no "
                "parked notification has is an error.",
            )
            add_database_argument(p)
            # Also accepted after the action (``parked retry --all -v 0``).
            p.add_argument(
                "-v",
                "--verbosity",
                type=int,
                choices=[0, 1, 2, 3],
                default=argparse.SUPPRESS,
                help="Verbosity level; 0 prints nothing but errors.",
            )
            if action != "list":
                p.add_argument(
                    "--all",
                    action="store_true",
                    help="Every parked notification (not together with --channel, --model or "
                    "--id); one of these selections is required.",
                )
                add_progress_arguments(p, "rows")
            if action == "purge":
                p.add_argument(
                    "--noinput",
                    "--no-input",
                    action="store_false",
                    dest="interactive",
                    help="Do not ask for confirmation (required without a terminal).",
                )

    def handle(self, *args: Any, **options: Any) -> None:
        check_database(options["database"])
        action = options["action"]
        selection = _selection(options)
        select_all = options.get("all", False)
        if action != "list":
            if select_all and selection:
                raise CommandError(
                    f"{action}: --all cannot be combined with "
                    f"{', '.join(s.split(' ', 1)[0] for s in selection)} (it selects every "
                    "parked notification)",
                    returncode=INVALID,
                )
            if not (selection or select_all):
                raise CommandError(
                    f"{action}: select notifications with --channel, --model, --id or --all",
                    returncode=INVALID,
                )
        try:
            queryset = parking.parked(
                options["channel"], options["model"], options["ids"], options["database"]
            )
        except parking.SelectionError as exc:
            raise CommandError(str(exc), returncode=INVALID) from None
        if action == "purge" and options["interactive"] and not sys.stdin.isatty():
            raise CommandError(
                "purge: no terminal to confirm on; pass --noinput to delete without asking",
                returncode=INVALID,
            )
        verbosity = options["verbosity"]
        if action == "list":
            self._list(queryset, selection)
            return
        count = queryset.count()
        if not count:
            if verbosity > 0:
                self.stdout.write(_nothing(selection))
            return
        if action == "purge" and options["interactive"]:
            try:
                answer = input(f"Delete {count} parked notification(s)? Type 'yes' to continue: ")
            except EOFError:
                answer = ""
            if answer != "yes":
                raise CommandError("purge cancelled", returncode=1)
        bar = progress_bar(self.stderr, count, verbosity, options["progress"])
        on_chunk = bar.advance if bar is not None else None
        if action == "retry":
            done, what = parking.retry(queryset, on_chunk), "made pending"
        else:
            done, what = parking.purge(queryset, on_chunk), "deleted"
        if bar is not None:
            bar.finish()
        if verbosity > 0:
            self.stdout.write(f"{done} parked notification(s) {what}")

    def _list(self, queryset: Any, selection: list[str]) -> None:
        rows = list(queryset)
        if not rows:
            self.stdout.write(_nothing(selection))
            return
        self.stdout.write(f"{'id':>8}  {'model':<24} {'history_id':<38} t  tries  error")
        for n in rows:
            error = n.last_error.splitlines()[0] if n.last_error else ""
            self.stdout.write(
                f"{n.pk:>8}  {n.model:<24} {n.history_id:<38} {n.history_type}  "
                f"{n.attempts:>5}  {error[:120]}"
            )


def _selection(options: dict[str, Any]) -> list[str]:
    """The selection options given, as they were typed (``--model shop.Order``)."""
    given = [
        ("--channel", options["channel"]),
        ("--model", options["model"]),
        ("--id", [str(i) for i in options["ids"]]),
    ]
    return [f"{option} {' '.join(values)}" for option, values in given if values]


def _nothing(selection: list[str]) -> str:
    if not selection:
        return "No parked notifications."
    return f"nothing matched: no parked notification with {' '.join(selection)}"
