"""``manage.py parked list|retry|purge``: notifications whose listeners kept failing."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgpubsub_simplehistory import parking
from pgpubsub_simplehistory.exceptions import ChannelConfigurationError
from pgpubsub_simplehistory.progress import add_progress_arguments, progress_bar


class Command(BaseCommand):
    help = (
        "List, retry or purge parked notifications of history channels. A parked notification "
        "holds back later changes of the same object (unless its channel sets "
        "parked_blocks_object = False) until it is retried or purged."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{list,retry,purge}")
        for action, text in (
            ("list", "show parked notifications"),
            ("retry", "make them pending again (attempts reset, due now)"),
            ("purge", "delete them (their history records stay; replay_history can re-run them)"),
        ):
            p = sub.add_parser(action, help=text, description=text)
            p.add_argument("--channel", nargs="+", default=[], help="Dotted channel paths.")
            p.add_argument("--model", nargs="+", default=[], help="app_label.ModelName values.")
            p.add_argument("--id", nargs="+", type=int, default=[], dest="ids", help="Ids.")
            p.add_argument("--database", default="default")
            # Also accepted after the action (``parked retry --all -v 0``).
            p.add_argument(
                "-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=argparse.SUPPRESS
            )
            if action != "list":
                p.add_argument("--all", action="store_true", help="Every parked notification.")
                add_progress_arguments(p, "rows")
            if action == "purge":
                p.add_argument(
                    "--noinput",
                    "--no-input",
                    action="store_false",
                    dest="interactive",
                    help="Do not ask for confirmation.",
                )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            queryset = parking.parked(
                options["channel"], options["model"], options["ids"], options["database"]
            )
        except ChannelConfigurationError as exc:
            raise CommandError(str(exc), returncode=2) from None
        if action == "list":
            self._list(queryset)
            return
        if not (options["channel"] or options["model"] or options["ids"] or options["all"]):
            raise CommandError(
                f"{action}: select notifications with --channel, --model, --id or --all",
                returncode=2,
            )
        count = queryset.count()
        verbosity = options["verbosity"]
        if action == "purge" and count and options["interactive"]:
            answer = input(f"Delete {count} parked notification(s)? Type 'yes' to continue: ")
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

    def _list(self, queryset: Any) -> None:
        rows = list(queryset)
        if not rows:
            self.stdout.write("No parked notifications.")
            return
        self.stdout.write(f"{'id':>8}  {'model':<24} {'history_id':<38} t  tries  error")
        for n in rows:
            error = n.last_error.splitlines()[0] if n.last_error else ""
            self.stdout.write(
                f"{n.pk:>8}  {n.model:<24} {n.history_id:<38} {n.history_type}  "
                f"{n.attempts:>5}  {error[:120]}"
            )
