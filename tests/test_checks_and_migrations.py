"""System checks and migrations of the example project."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import override_settings

from pgpubsub_simplehistory.checks import check_channels, check_installed_apps


def test_project_checks_are_clean():
    assert [m for m in run_checks() if m.id and m.id.startswith("pgpubsub_simplehistory")] == []


@pytest.mark.django_db
def test_migrations_are_up_to_date_including_triggers():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_pgpubsub_before_us_is_an_error():
    apps = [
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "pgpubsub",
        "pgpubsub_simplehistory",
        "pgtrigger",
    ]
    with override_settings(INSTALLED_APPS=apps):
        messages = check_installed_apps(None)
    assert [m.id for m in messages] == ["pgpubsub_simplehistory.E002"]
    assert "Move 'pgpubsub_simplehistory' above 'pgpubsub'" in messages[0].hint


def test_missing_pgtrigger_is_an_error():
    with override_settings(INSTALLED_APPS=["pgpubsub_simplehistory", "pgpubsub"]):
        messages = check_installed_apps(None)
    assert [m.id for m in messages] == ["pgpubsub_simplehistory.E004"]
    assert "'pgtrigger'" in messages[0].msg


def test_channel_checks(isolated_registry):
    from dataclasses import dataclass

    from pgpubsub_simplehistory import HistoryTriggerChannel
    from testproject.shop.models import AuditNote, ReceivedEvent

    @dataclass
    class NoHistory(HistoryTriggerChannel):
        model = ReceivedEvent

    @dataclass
    class NotAtomic(HistoryTriggerChannel):
        model = AuditNote

    messages = check_channels(None)
    assert [m.id for m in messages] == [
        "pgpubsub_simplehistory.E001",
        "pgpubsub_simplehistory.W001",
    ]
    assert "shop.ReceivedEvent has no django-simple-history HistoricalRecords" in messages[0].msg
    assert "not atomic" in messages[1].msg


def test_subscribing_to_a_plain_channel_is_a_check_error(isolated_registry):
    from dataclasses import dataclass

    from pgpubsub import TriggerChannel

    from pgpubsub_simplehistory import post_save_listener
    from testproject.shop.models import Order

    @dataclass
    class Plain(TriggerChannel):
        model = Order

    post_save_listener(Plain)(lambda old, new: None)  # does not raise at import time
    [error] = check_channels(None)
    assert error.id == "pgpubsub_simplehistory.E007"
    assert "is not a HistoryTriggerChannel" in error.msg


def test_listener_with_an_unknown_required_argument_is_a_check_error(isolated_registry):
    from pgpubsub_simplehistory import post_save_listener
    from testproject.shop.channels import OrderChannel

    def bad(old, new, order):  # 'order' is never passed
        return None

    post_save_listener(OrderChannel)(bad)
    assert bad not in [s.callback for s in OrderChannel.listeners()]
    [error] = check_channels(None)
    assert error.id == "pgpubsub_simplehistory.E007"
    assert "requires argument 'order'" in error.msg
