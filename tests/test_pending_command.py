from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from testproject.shop.channels import OrderChannel
from testproject.shop.factories import OrderFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _latest_shop_migration() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM django_migrations WHERE app = 'shop' ORDER BY id DESC")
        return f"shop.{cursor.fetchone()[0]}"


def test_pending_per_channel_and_migration():
    latest = _latest_shop_migration()
    OrderFactory()
    OrderFactory()
    out = StringIO()
    call_command("pending_notifications", "--json", stdout=out)
    (group,) = json.loads(out.getvalue())
    assert group["channel"] == OrderChannel.name()
    assert group["count"] == 2
    assert group["migration"] == latest

    table = StringIO()
    call_command("pending_notifications", stdout=table)
    assert OrderChannel.name() in table.getvalue() and latest in table.getvalue()

    with pytest.raises(CommandError, match="2 notification"):
        call_command("pending_notifications", "--fail-if-pending", stdout=StringIO())


def test_nothing_pending(worker):
    OrderFactory()
    worker.drain()
    out = StringIO()
    call_command("pending_notifications", "--fail-if-pending", stdout=out)
    assert "No pending notifications." in out.getvalue()
