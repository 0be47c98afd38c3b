"""``manage.py stream_orders``: a writer for fault tests and benchmarks.

Creates ``--objects`` orders, then updates them round-robin until ``--count`` changes were made,
each change in its own transaction (autocommit). A change that fails because the connection was
lost is retried on a new connection: the writer survives server restarts and killed backends.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import InterfaceError, OperationalError, connection

from testproject.shop.models import Customer, Order


class Command(BaseCommand):
    help = "Write --count order changes over --objects orders, surviving connection loss."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=1000)
        parser.add_argument("--objects", type=int, default=10)
        parser.add_argument("--rate", type=float, default=0, help="Changes/s (0: no limit).")
        parser.add_argument("--tag", default="stream", help="Customer name of the orders.")

    def handle(self, *args: Any, **options: Any) -> None:
        count, objects, tag = options["count"], options["objects"], options["tag"]
        interval = 1.0 / options["rate"] if options["rate"] else 0.0
        customer = self._retry(lambda: Customer.objects.create(name=tag))
        orders: list[Order] = []
        retries = 0
        started = time.monotonic()
        for i in range(count):
            if interval:
                time.sleep(max(0.0, started + i * interval - time.monotonic()))
            if len(orders) < objects:
                order = Order(customer=customer, status="s0")
                retries += self._retry_count(order.save)
                orders.append(order)
            else:
                order = orders[i % objects]
                order.status = f"s{i // objects}"
                retries += self._retry_count(order.save)
        self.stdout.write(f"wrote {count} changes over {len(orders)} orders ({retries} retries)")

    def _retry(self, fn: Any) -> Any:
        for attempt in range(200):
            try:
                return fn()
            except (OperationalError, InterfaceError):
                connection.close()
                time.sleep(min(0.05 * (attempt + 1), 1.0))
        raise RuntimeError("database unreachable for too long")

    def _retry_count(self, fn: Any) -> int:
        for attempt in range(200):
            try:
                fn()
                return attempt
            except (OperationalError, InterfaceError):
                connection.close()
                time.sleep(min(0.05 * (attempt + 1), 1.0))
        raise RuntimeError("database unreachable for too long")
