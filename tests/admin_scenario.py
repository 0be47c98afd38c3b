"""A queue as an operator meets it, for the admin's tests and screenshots.

Real notifications of the shop's channels, settled by a real worker where it matters (the
parked notification has the listener's own error and traceback), and an hour of per-minute
statistics for the dashboard's charts.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from pgpubsub_simplehistory.models import Minute, Notification
from pgpubsub_simplehistory.statistics import LAG_BUCKETS_MS
from testproject.shop.channels import OrderChannel, ProductChannel
from testproject.shop.factories import OrderFactory, ProductFactory


@dataclass(frozen=True)
class Scenario:
    parked: Notification  # the order whose listener raised, parked after its attempts
    held_back: Notification  # the same order's next change, held back behind it
    waiting: Notification  # failed once, due again in ten minutes
    in_flight: Notification  # leased to a worker
    pending: list[Notification]  # due, nothing in their way
    product_parked: Notification  # another channel's parked notification
    processed: int  # notifications the worker handled
    history: dict[str, int]  # processed per listen name in the statistics added for the hour


def of(order: Any) -> list[Notification]:
    return list(
        Notification.objects.filter(model="shop.Order", object_id=str(order.pk)).order_by("pk")
    )


def seed(worker: Any, *, history: bool = True) -> Scenario:
    """Fill the queue (``worker``: the tests' draining worker) and, with ``history``, the last
    hour's statistics."""
    for _ in range(12):
        OrderFactory(status="fine")
    bad, flaky = OrderFactory(status="explode"), OrderFactory(status="explode")
    processed = worker.drain()  # the fine ones processed; the two exploding ones failed once
    if worker.statistics is not None:
        worker.statistics.flush()
    now = timezone.now()
    [parked] = of(bad)
    Notification.objects.filter(pk=parked.pk).update(state="parked", attempts=5)
    [waiting] = of(flaky)
    Notification.objects.filter(pk=waiting.pk).update(
        available_at=now + datetime.timedelta(minutes=10)
    )
    bad.status = "paid"
    bad.save()  # held back behind the parked change of the same order
    held_back = of(bad)[-1]
    busy = OrderFactory(status="new")
    [in_flight] = of(busy)
    Notification.objects.filter(pk=in_flight.pk).update(
        attempts=1, leased_by="worker-2:4242", leased_until=now + datetime.timedelta(seconds=10)
    )
    pending = [of(OrderFactory(status="new"))[0] for _ in range(3)]
    product = ProductFactory()
    product_parked = Notification.objects.get(model="shop.Product", object_id=str(product.pk))
    Notification.objects.filter(pk=product_parked.pk).update(
        state="parked",
        attempts=5,
        last_error=(
            "ConnectionError: search index at search:9200 refused the connection\n"
            "(after 5 attempts)"
        ),
        last_traceback=(
            "Traceback (most recent call last):\n"
            '  File "shop/listeners.py", line 40, in index_product\n'
            "    search.index(new)\n"
            "ConnectionError: search index at search:9200 refused the connection\n"
        ),
    )
    added = fill_history(now) if history else {}
    return Scenario(
        parked=Notification.objects.get(pk=parked.pk),
        held_back=held_back,
        waiting=Notification.objects.get(pk=waiting.pk),
        in_flight=Notification.objects.get(pk=in_flight.pk),
        pending=pending,
        product_parked=Notification.objects.get(pk=product_parked.pk),
        processed=processed,
        history=added,
    )


def fill_history(now: datetime.datetime) -> dict[str, int]:
    """59 minutes of statistics before the current one: a steady load, a burst whose lag rises
    for a few minutes, a quieter channel. Minutes a worker already wrote are left as they are.
    Returns what was added: processed per listen name."""
    current = now.replace(second=0, microsecond=0)
    rows = []
    for back in range(59, 0, -1):
        minute = current - datetime.timedelta(minutes=back)
        i = 59 - back
        burst = 34 <= i <= 39
        orders = int(60 + 25 * math.sin(i / 5) + (i * 7) % 11) + (240 if burst else 0)
        rows.append(_minute(OrderChannel, minute, orders, slow=burst, retried=int(burst)))
        products = int(12 + 8 * math.cos(i / 7)) if i % 9 else 0
        rows.append(_minute(ProductChannel, minute, products, slow=False, retried=0))
    taken = set(Minute.objects.values_list("listen_name", "minute"))
    rows = [r for r in rows if r.processed and (r.listen_name, r.minute) not in taken]
    Minute.objects.bulk_create(rows)
    added: dict[str, int] = {}
    for row in rows:
        added[row.listen_name] = added.get(row.listen_name, 0) + row.processed
    return added


def _minute(
    channel: Any, minute: datetime.datetime, processed: int, *, slow: bool, retried: int
) -> Minute:
    buckets = [0] * (len(LAG_BUCKETS_MS) + 1)
    # Most changes reach their listeners within 5-20 ms; a burst queues them for up to 2 s.
    shares = {3: 0.5, 4: 0.35, 5: 0.1, 6: 0.05} if not slow else {5: 0.3, 8: 0.3, 9: 0.3, 10: 0.1}
    for index, share in shares.items():
        buckets[index] = int(processed * share)
    buckets[3] += processed - sum(buckets)
    return Minute(
        listen_name=channel.listen_safe_name(),
        minute=minute,
        processed=processed,
        retried=retried,
        lag_buckets=buckets,
        lag_max_ms=1800.0 if slow else 40.0,
    )
