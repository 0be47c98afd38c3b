"""``manage.py listen``: run a worker (or ``--processes N`` of them) serving history channels
and django-pgpubsub's own."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgpubsub_simplehistory.channels import is_history_channel
from pgpubsub_simplehistory.checks import trigger_problems
from pgpubsub_simplehistory.exceptions import ChannelConfigurationError
from pgpubsub_simplehistory.listening import Worker
from pgpubsub_simplehistory.logs import JsonFormatter
from pgpubsub_simplehistory.management._options import INVALID, check_database, version
from pgpubsub_simplehistory.supervisor import supervise

_LEVELS = {
    name: getattr(logging, name) for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
}


class Command(BaseCommand):
    help = (
        "Run a worker that receives notifications of history channels (and django-pgpubsub "
        "channels) and runs their listeners. Stored notifications of lockable channels are "
        "processed on start and swept periodically. SIGTERM/SIGINT finish the current "
        "notification and exit 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--channels",
            nargs="+",
            metavar="CHANNEL",
            help="Dotted paths of the channels to listen to (default: every subscribed channel).",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="Number of worker processes to run and supervise (default 1).",
        )
        parser.add_argument(
            "--recover",
            action="store_true",
            help="Also process stored notifications of django-pgpubsub's own lockable channels "
            "on start (history channels always are).",
        )
        parser.add_argument("--worker", action="store_true", help="Run one worker in this process.")
        parser.add_argument(
            "--worker-start-method",
            choices=["spawn", "fork"],
            default="spawn",
            help="Accepted for compatibility with django-pgpubsub; workers are always spawned.",
        )
        parser.add_argument(
            "--no-restart-on-failure",
            action="store_true",
            help="Do not restart a worker process that exits with an error.",
        )
        parser.add_argument(
            "--sweep-interval",
            type=float,
            default=None,
            help="Seconds between sweeps of stored notifications "
            "(default PGPUBSUB_SIMPLEHISTORY_SWEEP_INTERVAL or 2).",
        )
        parser.add_argument("--loglevel", default="info", help="Logging level (default info).")
        parser.add_argument(
            "--logformat",
            default="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
            help="Logging format (a %%-style format), or 'json' for one JSON object per line "
            "with the fields channel, model, history_id, duration_ms, outcome.",
        )

    def get_version(self) -> str:
        return version()

    def handle(self, *args: Any, **options: Any) -> None:
        level = _LEVELS.get(str(options["loglevel"]).upper())
        if level is None:
            raise CommandError(
                f"unknown --loglevel {options['loglevel']!r}: use debug, info, warning, error "
                "or critical",
                returncode=INVALID,
            )
        handler = logging.StreamHandler()
        if options["logformat"] == "json":
            handler.setFormatter(JsonFormatter())
        else:
            try:
                handler.setFormatter(logging.Formatter(options["logformat"], validate=True))
            except (ValueError, TypeError) as exc:
                raise CommandError(
                    f"invalid --logformat {options['logformat']!r}: {exc}", returncode=INVALID
                ) from None
        logging.basicConfig(level=level, handlers=[handler])
        processes = options["processes"]
        if processes < 1:
            raise CommandError(
                f"--processes must be at least 1, not {processes}", returncode=INVALID
            )
        if options["sweep_interval"] is not None and options["sweep_interval"] <= 0:
            raise CommandError("--sweep-interval must be positive", returncode=INVALID)
        if options["worker"] or processes == 1:
            self._listen(options)
        else:
            self._supervise(processes, options)

    def _listen(self, options: dict[str, Any]) -> None:
        try:
            worker = Worker(
                options["channels"],
                sweep_interval=options["sweep_interval"],
                recover=options["recover"],
            )
        except ChannelConfigurationError as exc:
            raise CommandError(str(exc), returncode=INVALID) from None
        check_database(worker.using)
        history = [c for c in worker.channels if is_history_channel(c)]
        problems = trigger_problems([worker.using], history)
        if problems:
            raise CommandError(
                "; ".join(problems) + ". Run makemigrations and migrate before listening."
            )
        worker.install_signal_handlers()
        worker.run()

    def _supervise(self, processes: int, options: dict[str, Any]) -> None:
        restart = not options["no_restart_on_failure"]
        problem = supervise(_worker_argv(options), processes, restart=restart)
        if problem is not None:
            raise CommandError(problem)


def _worker_argv(options: dict[str, Any]) -> list[str]:
    entry = sys.argv[0]
    if os.path.basename(entry) == "manage.py":
        argv = [sys.executable, entry, "listen", "--worker"]
    else:
        argv = [sys.executable, "-m", "django", "listen", "--worker"]
    if options["channels"]:
        argv += ["--channels", *options["channels"]]
    if options["recover"]:
        argv.append("--recover")
    if options["sweep_interval"] is not None:
        argv += ["--sweep-interval", str(options["sweep_interval"])]
    argv += ["--loglevel", options["loglevel"], "--logformat", options["logformat"]]
    return argv
