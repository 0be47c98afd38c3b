"""``manage.py bench_write``: one Django writer process of the benchmarks (benchmarks/writers.py).

Loads the objects of ``--model`` whose name starts with ``--prefix``, prints ``ready``, waits for a
line on stdin (so that every writer process starts at once), then saves them round-robin, each
save in its own transaction (autocommit), for ``--seconds``. Prints one JSON line: saves, seconds.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Save --model objects named --prefix* round-robin for --seconds, after a line on stdin."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", required=True, help="A bench model: HistItem, OursItem...")
        parser.add_argument("--prefix", required=True, help="Name prefix of this writer's rows.")
        parser.add_argument("--seconds", type=float, default=10.0)

    def handle(self, *args: Any, **options: Any) -> None:
        model = apps.get_model("bench", options["model"])
        objects = list(model.objects.filter(name__startswith=options["prefix"]))
        if not objects:
            raise CommandError(f"no {options['model']} named {options['prefix']}*")
        objects[0].save()  # warm up: the first save prepares what later saves reuse
        print("ready", flush=True)
        sys.stdin.readline()
        saves = 0
        started = time.perf_counter()
        deadline = started + options["seconds"]
        while time.perf_counter() < deadline:
            obj = objects[saves % len(objects)]
            obj.counter += 1
            obj.save()
            saves += 1
        seconds = time.perf_counter() - started
        print(json.dumps({"saves": saves, "seconds": seconds}), flush=True)
