"""``manage.py replay_history``: run listeners again for chosen historical records."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from pgpubsub_simplehistory.management._options import (
    INVALID,
    DatabaseCommand,
    add_database_argument,
    check_database,
)
from pgpubsub_simplehistory.progress import add_progress_arguments, progress_bar
from pgpubsub_simplehistory.registry import HISTORY_TYPES
from pgpubsub_simplehistory.replaying import (
    ReplayError,
    ReplayItem,
    plan_replay,
    run_plan,
)


class Command(DatabaseCommand):
    help = (
        "Re-deliver historical records of a model to the listeners of its history channels, "
        "exactly as the listener would (event.replayed is True), each record in its own "
        "transaction, in history order. Replay is at-least-once: listeners should be idempotent. "
        "Exit status: 0 all replayed (also when the selection matched no record: a 'nothing "
        "matched' line says so), 1 some failed, 2 invalid request (nothing run)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "history_ids",
            nargs="*",
            metavar="history_id",
            help="Primary keys of history records of --model (the history_id column); each must "
            "exist.",
        )
        parser.add_argument(
            "--model",
            required=True,
            metavar="APP.MODEL",
            help="The tracked model, e.g. shop.Order (required).",
        )
        parser.add_argument(
            "--since",
            metavar="WHEN",
            help="Records at or after this ISO 8601 date or datetime (a date: from its start).",
        )
        parser.add_argument(
            "--until",
            metavar="WHEN",
            help="Records at or before this ISO 8601 date or datetime (a date: to its end).",
        )
        parser.add_argument(
            "--object",
            nargs="+",
            dest="objects",
            metavar="PK",
            help="Records of these objects (primary keys of --model).",
        )
        parser.add_argument(
            "--type",
            nargs="+",
            dest="types",
            choices=HISTORY_TYPES,
            help="Records of these history types: + (insert), ~ (update), - (delete).",
        )
        parser.add_argument(
            "--all",
            action="store_true",
            help="Every record of the model (not together with history ids, --since, --until, "
            "--object or --type).",
        )
        parser.add_argument(
            "--channel",
            metavar="CHANNEL",
            help="Only the listeners of this history channel of the model (class path).",
        )
        parser.add_argument(
            "--listener",
            metavar="LISTENER",
            help="Only this listener function (dotted path, e.g. shop.listeners.on_order_saved).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List the records and the listeners they would go to; run nothing.",
        )
        parser.add_argument(
            "--stop-on-error", action="store_true", help="Stop at the first failing record."
        )
        add_database_argument(parser)
        add_progress_arguments(parser, "records")

    def handle(self, *args: Any, **options: Any) -> None:
        check_database(options["database"])
        try:
            plan = plan_replay(
                options["model"],
                options["history_ids"],
                since=options["since"],
                until=options["until"],
                object_ids=options["objects"] or (),
                history_types=options["types"] or (),
                channel=options["channel"],
                listener=options["listener"],
                select_all=options["all"],
                using=options["database"],
            )
        except ReplayError as exc:
            raise CommandError(str(exc), returncode=INVALID) from None
        total = plan.count()
        verbosity = options["verbosity"]
        if not total:
            if verbosity > 0:
                self.stdout.write(
                    f"nothing matched: no history record of {plan.model._meta.label} "
                    f"with {_selection(options)}"
                )
            return
        bar = progress_bar(self.stderr, total, verbosity, options["progress"])
        dry_run = options["dry_run"]

        def on_item(item: ReplayItem, outcome: str) -> None:
            if dry_run and verbosity > 0:
                listeners = ", ".join(s.name for s in item.listeners) or "(no listener)"
                self.stdout.write(
                    f"would replay {plan.history_model._meta.label} {item.history_id} "
                    f"({item.history_type} object {item.object_id} at "
                    f"{item.history_date.isoformat()}) -> {listeners}"
                )
            elif outcome == "failed" and verbosity > 0:
                self.stderr.write(f"failed: {plan.history_model._meta.label} {item.history_id}")
            if bar is not None:
                bar.advance()

        result = run_plan(
            plan, dry_run=dry_run, stop_on_error=options["stop_on_error"], on_item=on_item
        )
        if bar is not None:
            bar.finish()
        if dry_run:
            if verbosity > 0:
                self.stdout.write(f"dry run: {total} record(s) selected, nothing replayed")
            return
        if verbosity > 0:
            self.stdout.write(result.summary())
        if not result.ok:
            raise CommandError(f"{result.failed} record(s) failed", returncode=1)


def _selection(options: dict[str, Any]) -> str:
    """The record selection as it was typed (``--object 5 --type +``)."""
    given = [
        ("--since", [options["since"]] if options["since"] else []),
        ("--until", [options["until"]] if options["until"] else []),
        ("--object", options["objects"] or []),
        ("--type", options["types"] or []),
    ]
    parts = [" ".join(options["history_ids"])] if options["history_ids"] else []
    parts += [f"{option} {' '.join(values)}" for option, values in given if values]
    return " ".join(parts) or "--all"
