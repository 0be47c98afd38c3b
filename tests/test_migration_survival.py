"""The seed scenario: the listener is down, a change is notified and stored, a backward-incompatible
migration is applied, then the listener starts. Real migrations of ``testproject/evolving``.

Changes are written "by the old code": through the models of the migration state the database is
at (``MigrationExecutor.loader.project_state``), the live row and its historical record in one
transaction, as django-simple-history did at that time. The installed triggers are real: they store
the notifications. Then ``migrate`` runs to the latest state and a listener using today's models
processes what was stored.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DataError, connection
from pgpubsub.models import Notification as PgpubsubNotification

from pgpubsub_simplehistory.models import Notification
from testproject.evolving.channels import WidgetChannel, WidgetJsonChannel
from testproject.evolving.models import Widget
from testproject.evolving.oldcode import OldCode
from testproject.shop.models import ReceivedEvent

from .conftest import DrainingWorker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LATEST = "0007_history_order"


def migrate(target: str) -> None:
    call_command("migrate", "evolving", target, verbosity=0)


def applied() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM django_migrations WHERE app = 'evolving' ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture
def at() -> Iterator[Any]:
    """``at("0003_...")`` migrates evolving there and returns the old code; restores at teardown."""

    def go(target: str) -> OldCode:
        migrate(target)
        return OldCode(target)

    yield go
    migrate(LATEST)


def listen_after_migration(*channels: Any) -> list[ReceivedEvent]:
    migrate(LATEST)
    assert applied()[-1] == LATEST
    worker = DrainingWorker(list(channels or [WidgetChannel]), sweep_interval=3600, recover=True)
    worker.start()  # sweeps the stored notifications
    worker.drain()
    worker.close()
    return list(ReceivedEvent.objects.filter(listener="on_widget_changed"))


def test_1_field_added_not_null_and_backfilled(at):
    old_code = at("0004_rename_and_remove_fields")
    pk = old_code.create(name="abc", label="x")
    old_code.update(pk, name="abcd")
    assert Notification.objects.filter(listen_name=WidgetChannel.listen_safe_name()).count() == 2

    insert, update = listen_after_migration()

    assert insert.new["priority"] == 30  # back-filled from its own historical name
    assert (update.old["priority"], update.new["priority"]) == (30, 40)
    assert update.extra["schema_changed"] is True
    assert update.extra["migration_at_change"] == "evolving.0004_rename_and_remove_fields"
    assert update.extra["migration_now"] == f"evolving.{LATEST}"
    assert update.extra["current"]["priority"] == 40  # the live row, back-filled by RunPython
    assert Notification.objects.filter(listen_name=WidgetChannel.listen_safe_name()).count() == 0


def test_2_field_types_changed_integer_to_decimal_and_text_to_integer(at):
    old_code = at("0002_rename_model")
    pk = old_code.create(name="typed", weight=3, code="12", title="t")
    (event,) = listen_after_migration()
    assert event.object_id == str(pk)
    assert event.new["weight"] == "3.00"  # Decimal today
    assert event.new["code"] == 12  # integer today, cast by the migration


def test_3_field_renamed(at):
    old_code = at("0003_change_types")
    old_code.create(name="renamed", title="hello")
    (event,) = listen_after_migration()
    assert event.new["label"] == "hello"
    assert "title" not in event.new


def test_4_field_removed(at):
    old_code = at("0003_change_types")
    old_code.create(name="slim", legacy="old stuff")
    (event,) = listen_after_migration()
    assert "legacy" not in event.new
    assert event.new["name"] == "slim"


def test_5_model_renamed(at):
    old_code = at("0001_initial")
    pk = old_code.create(name="gadget", weight=5, code="7", title="was a gadget")
    stored = Notification.objects.get(listen_name=WidgetChannel.listen_safe_name())
    assert (stored.model, stored.history_model) == ("evolving.Gadget", "evolving.HistoricalGadget")

    (event,) = listen_after_migration()

    assert event.extra["model"] == "evolving.Widget"
    assert event.new == {
        "id": pk,
        "pk": pk,
        "name": "gadget",
        "weight": "5.00",
        "code": 7,
        "label": "was a gadget",
        "priority": 60,
        "_adding": False,
        "_db": "default",
    }
    assert event.extra["schema_changed"] is True


def test_6_row_deleted_after_the_change_and_before_processing(at):
    old_code = at("0004_rename_and_remove_fields")
    pk = old_code.create(name="short-lived")
    old_code.update(pk, label="changed")
    old_code.delete(pk)

    insert, update, delete = listen_after_migration()

    assert insert.new["name"] == "short-lived" and insert.extra["deleted"] is True
    assert update.new["label"] == "changed" and update.new["priority"] == 110
    assert update.extra["deleted"] is True
    assert update.extra["current"] is None
    assert delete.history_type == "-" and delete.new is None
    assert delete.old["label"] == "changed"
    assert not Widget.objects.exists()


def test_7_pgpubsub_json_channel_misses_the_backfill_ours_does_not(at):
    old_code = at("0004_rename_and_remove_fields")
    pk = old_code.create(name="abc")
    assert (
        PgpubsubNotification.objects.filter(channel=WidgetJsonChannel.listen_safe_name()).count()
        == 1
    )

    (ours,) = listen_after_migration(WidgetChannel, WidgetJsonChannel)
    # django-pgpubsub's trigger on the live table also fired for the data migration's own UPDATE.
    theirs, migration_update = ReceivedEvent.objects.filter(listener="on_widget_json")

    assert Widget.objects.get(pk=pk).priority == 30  # the invariant the migration established
    assert theirs.new["priority"] == 0  # django-pgpubsub: the stored JSON predates the field
    assert migration_update.new["priority"] == 30
    assert ours.new["priority"] == 30
    assert ours.extra["schema_changed"] is True


def test_type_change_that_cannot_cast_old_history_fails_loudly(at):
    old_code = at("0002_rename_model")
    pk = old_code.create(name="bad", code="abc")
    old_code.update(pk, code="12")  # the live row is castable, its first record is not

    with pytest.raises(DataError, match="invalid input syntax for type integer"):
        migrate("0003_change_types")

    assert applied()[-1] == "0002_rename_model"  # rolled back, nothing half-migrated
    assert sorted(old_code.history.objects.values_list("code", flat=True)) == ["12", "abc"]
    old_code.history.objects.filter(code="abc").delete()  # the operator's fix


@pytest.mark.subprocess
def test_seed_scenario_with_a_real_listener_process(at, manage):
    old_code = at("0004_rename_and_remove_fields")
    pk = old_code.create(name="seed")
    migrate(LATEST)
    proc = manage("listen", "--channels", "testproject.evolving.channels.WidgetChannel")
    event = wait_for(lambda: ReceivedEvent.objects.filter(listener="on_widget_changed").first())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert event.object_id == str(pk)
    assert event.new["priority"] == 40
    assert event.extra["schema_changed"] is True
    assert Decimal(event.new["weight"]) == 0
