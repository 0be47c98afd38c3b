"""The admin's changelist and dashboard during a large backlog (100,000 pending notifications).

Run with ``-s`` to print the figures (seconds, bytes, queries) that docs/how-to/admin.md quotes:

    TEST_DATABASE_NAME=test_psh_admin .venv/bin/python -m pytest -q -s -p no:cacheprovider \
        tests/test_admin_backlog.py
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pgpubsub_simplehistory import registry
from pgpubsub_simplehistory.models import Notification
from testproject.configs.channels import CatChannel, DogChannel
from testproject.shop.channels import OrderChannel

pytestmark = [pytest.mark.django_db, pytest.mark.driver_independent]

CHANGELIST = "/admin/pgpubsub_simplehistory/notification/"
DASHBOARD = CHANGELIST + "dashboard/"
ROWS = int(os.environ.get("PSH_BACKLOG_ROWS", "100000"))

# Straight into the queue table (the trigger's way is far too slow for 100,000 rows): three
# channels, a thousand objects each, long error texts on some, as a real backlog has.
_INSERT = """
INSERT INTO pgpubsub_simplehistory_notification
    (listen_name, model, history_model, history_id, history_type, object_id,
     migration_id_at_change, context, created_at, state, attempts, available_at, last_error,
     last_traceback, leased_by, leased_until)
SELECT (%(names)s::text[])[1 + g %% 3], 'shop.Order', 'shop.HistoricalOrder', g::text, '~',
       (g %% 1000)::text, NULL, '{}', now() - (%(rows)s - g) * interval '1 ms',
       CASE WHEN g %% 997 = 0 THEN 'parked' ELSE 'pending' END,
       CASE WHEN g %% 997 = 0 THEN 5 ELSE 0 END, now(),
       CASE WHEN g %% 997 = 0
            THEN 'RuntimeError: refused (' || g %% 3 || ')' || E'\n' || repeat('x', 2000)
            ELSE '' END,
       '', '', NULL
FROM generate_series(1, %(rows)s) g
"""


def fill_backlog(rows: int = ROWS) -> list[str]:
    names = [c.listen_safe_name() for c in (OrderChannel, CatChannel, DogChannel)]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, {"names": names, "rows": rows})
        cursor.execute("ANALYZE pgpubsub_simplehistory_notification")
    return names


def measure(client: Any, url: str) -> tuple[float, int, int, Any]:
    """Seconds (best of three), bytes and queries of one GET."""
    client.get(url)  # warm up: templates, the first plan of each query
    best = float("inf")
    for _ in range(3):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url)
            best = min(best, time.perf_counter() - started)
    assert response.status_code == 200, response.status_code
    return best, len(response.content), len(queries.captured_queries), response


def test_changelist_during_a_backlog_is_small_fast_and_has_one_link_per_channel(admin_client):
    names = fill_backlog()
    seconds, size, queries, response = measure(admin_client, CHANGELIST)
    print(f"\nchangelist, {ROWS} pending: {seconds:.3f} s, {size} bytes, {queries} queries")
    [channel_filter] = [f for f in response.context["cl"].filter_specs if f.title == "channel"]
    stored = Notification.objects.order_by().values_list("listen_name", flat=True).distinct()
    assert set(names) <= set(stored)
    choices = [value for value, _ in channel_filter.lookup_choices]
    assert sorted(choices) == sorted(stored)  # one entry per channel, not one per row
    html = response.content.decode()
    assert "more than 10,000 notifications" in html  # not counted further
    assert queries <= 8  # session, user, capped count, page, channels, held back
    assert size < 200_000

    for query in ("?state=pending", "?state=held_back", "?state=retry", "?state=parked", "?p=50"):
        seconds, size, queries, _ = measure(admin_client, f"{CHANGELIST}{query}&channel={names[0]}")
        print(f"changelist{query}, one channel: {seconds:.3f} s, {size} bytes, {queries} queries")
        assert queries <= 8 and size < 200_000


def test_dashboard_during_a_backlog_is_fast(admin_client):
    fill_backlog()
    seconds, size, queries, response = measure(admin_client, DASHBOARD)
    print(f"\ndashboard, {ROWS} stored: {seconds:.3f} s, {size} bytes, {queries} queries")
    board = response.context["dashboard"]
    assert board.total.pending + board.total.parked >= ROWS
    assert board.total.held_back > 0 and board.errors[0].message.startswith("RuntimeError: refused")
    streams = [s for sub in registry.subscriptions() for s in sub.streams()]
    assert queries <= 10 + len(streams)  # one per subscribed model: its history table
