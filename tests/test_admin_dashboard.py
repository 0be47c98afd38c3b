"""The admin dashboard (``notification/dashboard/``): the queue per channel, the last hour's
throughput and lag, the parked errors; every number a link to the list it counts."""

from __future__ import annotations

import datetime
import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from pgpubsub_simplehistory import dashboard
from pgpubsub_simplehistory.models import Minute, Notification
from pgpubsub_simplehistory.statistics import LAG_BUCKETS_MS, Tally
from testproject.shop.channels import OrderChannel, ProductChannel
from testproject.shop.factories import OrderFactory

from .admin_scenario import seed
from .test_admin import CHANGELIST, staff

DASHBOARD = CHANGELIST + "dashboard/"


@pytest.mark.django_db
def test_the_dashboard_needs_the_view_permission():
    assert staff().get(DASHBOARD).status_code == 403
    assert staff("change_notification").get(DASHBOARD).status_code == 200
    assert staff("view_notification").get(DASHBOARD).status_code == 200
    assert Client().get(DASHBOARD).status_code == 302  # to the login page


@pytest.mark.django_db
def test_the_app_index_and_the_list_link_to_the_dashboard(admin_client):
    assert (
        f'href="{DASHBOARD}"' in admin_client.get("/admin/pgpubsub_simplehistory/").content.decode()
    )
    assert f'href="{DASHBOARD}"' in admin_client.get(CHANGELIST).content.decode()


@pytest.mark.django_db
def test_an_empty_dashboard_says_what_to_do(admin_client):
    Notification.objects.all().delete()  # the admin user's own (auth.User has a channel)
    html = admin_client.get(DASHBOARD).content.decode()
    assert 'id="psh-empty"' in html and "Nothing has run yet" in html
    assert "lock_notifications = True" in html and "python manage.py listen" in html
    assert OrderChannel.name() in html  # the declared channels are named
    with override_settings(PGPUBSUB_SIMPLEHISTORY_STATISTICS=False):
        html = admin_client.get(DASHBOARD).content.decode()
    assert "PGPUBSUB_SIMPLEHISTORY_STATISTICS is False" in html


def _links(html: str, table: str) -> list[tuple[str, int]]:
    """``(href, number)`` of the links of one table."""
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return [
        (unescape(href), int(n))
        for href, n in re.findall(r'<a href="([^"]+)"[^>]*>(\d+)</a>', body)
    ]


def test_every_number_links_to_the_notifications_it_counts(worker, client):
    scenario = seed(worker)
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("op", "op@example.com", "pw"))
    response = client.get(DASHBOARD)
    board = response.context["dashboard"]
    orders = next(c for c in board.channels if c.listen_name == OrderChannel.listen_safe_name())
    assert (orders.pending, orders.in_flight, orders.waiting, orders.held_back, orders.parked) == (
        6,
        1,
        1,
        1,
        1,
    )
    assert board.total.parked == 2 and board.total.held_back == 1
    html = response.content.decode()
    links = _links(html, "psh-queue")
    assert len(links) >= 8
    for href, number in links:
        listed = client.get(href).context["cl"]
        assert listed.result_count == number, href
    for href, number in _links(html, "psh-errors") + _links(html, "psh-blockers"):
        assert client.get(href).context["cl"].result_count == number, href
    [blocker] = board.blockers
    assert (blocker.parked_id, blocker.object_id, blocker.held_back) == (
        scenario.parked.pk,
        scenario.parked.object_id,
        1,
    )
    assert f"parked #{scenario.parked.pk}</a>" in html
    # The last hour: the worker's own statistics (this minute) and the scenario's history.
    name = OrderChannel.listen_safe_name()
    [order_activity] = [a for a in board.activity if a.listen_name == name]
    assert order_activity.total.processed == 12 + scenario.history[name]  # 12 by the worker
    assert board.overall.total.processed == sum(scenario.history.values()) + 12
    assert {a.listen_name for a in board.activity} == {
        OrderChannel.listen_safe_name(),
        ProductChannel.listen_safe_name(),
    }
    assert board.overall.p50 is not None and board.overall.p95 >= board.overall.p50
    assert html.count('class="psh-bar"') >= 2 * 59 + 40  # all channels, orders, products
    # Idle channels are named in one line, not given a row each.
    assert 'id="psh-idle"' in html and "testproject.configs.channels.CatChannel" in html


@pytest.mark.django_db
def test_parked_errors_are_grouped_by_their_first_line(admin_client):
    rows = [OrderFactory(status="fine") for _ in range(4)]
    errors = [
        "RuntimeError: refused\nfirst",
        "RuntimeError: refused\nsecond",
        "RuntimeError: refused twice",
        "KeyError: 'x'",
    ]
    for order, error in zip(rows, errors, strict=True):
        Notification.objects.filter(model="shop.Order", object_id=str(order.pk)).update(
            state="parked", attempts=5, last_error=error
        )
    board = admin_client.get(DASHBOARD).context["dashboard"]
    assert [(e.message, e.count) for e in board.errors] == [
        ("RuntimeError: refused", 2),
        ("KeyError: 'x'", 1),
        ("RuntimeError: refused twice", 1),
    ]
    html = admin_client.get(DASHBOARD).content.decode()
    for href, number in _links(html, "psh-errors"):
        [message] = parse_qs(urlsplit(href).query)["error"]
        listed = admin_client.get(href).context["cl"]
        assert listed.result_count == number
        assert {n.last_error.splitlines()[0] for n in listed.result_list} == {message}


@pytest.mark.django_db
def test_the_dashboard_reads_the_statistics_of_the_last_hour_only():
    now = timezone.now()
    minute = now.replace(second=0, microsecond=0)
    name = OrderChannel.listen_safe_name()
    buckets = [0] * (len(LAG_BUCKETS_MS) + 1)
    buckets[3], buckets[9] = 90, 10  # 90 within 10 ms, 10 within 1 s
    Minute.objects.create(
        listen_name=name, minute=minute, processed=100, lag_buckets=buckets, lag_max_ms=700
    )
    Minute.objects.create(
        listen_name=name,
        minute=minute - datetime.timedelta(hours=2),
        processed=999,
        lag_buckets=buckets,
    )
    board = dashboard.build(now=now)
    [orders] = [a for a in board.activity if a.listen_name == name]
    assert orders.total.processed == 100  # two hours ago is not the last hour
    assert (orders.p50, orders.p95) == (10.0, 1000.0)
    assert dashboard.lag_label(orders.p95) == "<1 s"
    assert orders.chart.bars[-1].height == 72.0  # the busiest minute fills the strip


def test_chart_geometry():
    start = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
    minutes = [start + datetime.timedelta(minutes=i) for i in range(4)]
    quick, slow = [0] * (len(LAG_BUCKETS_MS) + 1), [0] * (len(LAG_BUCKETS_MS) + 1)
    quick[0], slow[10] = 10, 5  # 1 ms and 2 s
    tallies = [Tally(10, 0, 0, 0, quick, 1), Tally(), Tally(5, 0, 0, 0, slow, 1500), Tally()]
    chart = dashboard.chart(minutes, tallies, width=400)
    assert [b.height for b in chart.bars] == [72.0, 36.0]
    assert chart.processed_max == 10
    # Two runs of lag points: the minute without lags breaks the line.
    assert len(chart.p50) == 2 and len(chart.p95) == 2
    y_quick = float(chart.p50[0].split(",")[1])
    y_slow = float(chart.p50[1].split(",")[1])
    assert chart.lag_top <= y_slow < y_quick <= chart.lag_bottom  # longer lags higher
    assert [t.label for t in chart.time_ticks] == ["12:00", "12:02", "12:03"]
    assert "10 processed" in chart.bars[0].title and "p95 <1 ms" in chart.bars[0].title
