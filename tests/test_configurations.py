"""django-simple-history configurations through the public API, on real Postgres."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import override_settings

from pgpubsub_simplehistory.models import Notification
from testproject.configs import channels
from testproject.configs.models import (
    Article,
    Cat,
    Computed,
    Dog,
    Ephemeral,
    Labelled,
    Restaurant,
    Tag,
)
from testproject.shop.factories import OrderFactory
from testproject.shop.models import Customer, ReceivedEvent

pytestmark = pytest.mark.django_db(transaction=True)


def received(channel: type) -> list[ReceivedEvent]:
    return list(ReceivedEvent.objects.filter(listener=channel.__name__))


def test_custom_model_name_string_and_table_name(worker):
    item = Labelled.objects.create(name="a")
    item.name = "b"
    item.save()
    worker.drain()
    insert, update = received(channels.LabelledChannel)
    assert insert.extra["history_model"] == "configs.LabelledAudit"
    assert (update.old["name"], update.new["name"]) == ("a", "b")
    assert Labelled.history.model._meta.db_table == "configs_audit_one"


def test_custom_model_name_callable_and_uuid_history_id_field(worker):
    item = Computed.objects.create(name="c")
    worker.drain()
    (event,) = received(channels.ComputedChannel)
    assert event.extra["history_model"] == "configs.AuditComputed"
    assert event.history_id == str(item.history.get().history_id) and len(event.history_id) == 36


def test_uuid_history_id_setting_builds_the_field_the_uuid_channels_use():
    """SIMPLE_HISTORY_HISTORY_ID_USE_UUID is read when history models are created (startup);
    it yields the same UUID primary key that ComputedChannel and ShipmentChannel resolve."""
    from django.db import models

    from pgpubsub_simplehistory import HistoricalRecords

    with override_settings(SIMPLE_HISTORY_HISTORY_ID_USE_UUID=True):
        field = HistoricalRecords()._get_history_id_field()
    assert isinstance(field, models.UUIDField) and field.primary_key


def test_registered_model_of_another_app(worker):
    user = User.objects.create(username="ann")
    user.first_name = "Ann"
    user.save()
    worker.drain()
    insert, update = received(channels.UserChannel)
    assert insert.extra["history_model"] == "configs.HistoricalUser"
    assert update.new["first_name"] == "Ann" and update.old["first_name"] == ""


def test_abstract_base_with_inherit_true_gives_each_child_its_channel(worker):
    Cat.objects.create(name="tom")
    Dog.objects.create(name="rex")
    worker.drain()
    (cat,) = received(channels.CatChannel)
    (dog,) = received(channels.DogChannel)
    assert (cat.extra["history_model"], cat.new["lives"]) == ("configs.HistoricalCat", 9)
    assert (dog.extra["history_model"], dog.new["good"]) == ("configs.HistoricalDog", True)


def test_multi_table_inheritance_child_history_carries_parent_fields(worker):
    place = Restaurant.objects.create(name="Chez", serves="soup")
    place.name = "Chez Nous"
    place.save()
    worker.drain()
    insert, update = received(channels.RestaurantChannel)
    assert insert.new["name"] == "Chez"
    assert update.object_id == str(place.pk)
    assert (update.old["name"], update.new["name"], update.new["serves"]) == (
        "Chez",
        "Chez Nous",
        "soup",
    )


def test_m2m_changes_notify_with_the_m2m_state_as_of_the_record(worker):
    article = Article.objects.create(title="t")
    red, blue = Tag.objects.create(name="red"), Tag.objects.create(name="blue")
    article.tags.add(red, blue)
    article.tags.remove(red)
    article.tags.clear()
    worker.drain()
    events = received(channels.ArticleChannel)
    assert [e.history_type for e in events] == ["+", "~", "~", "~"]
    assert [e.extra["tags"] for e in events] == [[], ["blue", "red"], ["blue"], []]


def test_foreign_key_kept_as_of_the_change_even_if_the_target_is_gone(worker):
    from testproject.shop.models import Order

    order = OrderFactory()
    customer_id = order.customer_id
    customer = Customer.objects.get(pk=customer_id)
    customer.name = "renamed since"
    customer.save()
    worker.drain()
    (event,) = ReceivedEvent.objects.filter(listener="on_order_saved")

    from pgpubsub_simplehistory import replay

    resolved = []
    from pgpubsub_simplehistory import post_save_listener
    from pgpubsub_simplehistory.listeners import unsubscribe
    from testproject.shop.channels import OrderChannel

    def capture(new):
        resolved.append(new)

    post_save_listener(OrderChannel)(capture)
    try:
        replay(Order, object_ids=[order.pk], listener=f"{__name__}.{capture.__qualname__}")
        assert resolved[0].customer.name == "renamed since"  # today's target
        Customer.objects.filter(pk=customer_id).delete()  # cascades the order too
        resolved.clear()
        replay(Order, history_types=["+"], listener=f"{__name__}.{capture.__qualname__}")
    finally:
        unsubscribe(OrderChannel, capture)
    assert resolved[0].customer_id == customer_id == event.new["customer"]
    with pytest.raises(Customer.DoesNotExist):
        resolved[0].customer  # noqa: B018


def test_history_user_and_change_reason_reach_the_event(worker):
    user = User.objects.create(username="editor")
    worker.drain()
    item = Labelled(name="x")
    item._history_user = user
    item._change_reason = "imported from the old system"
    item.save()
    worker.drain()
    (event,) = received(channels.LabelledChannel)
    assert event.extra["history_user_id"] == user.pk
    assert event.extra["history_change_reason"] == "imported from the old system"


def test_cascade_delete_history_parks_pending_notifications_and_sends_no_delete(worker, caplog):
    item = Ephemeral.objects.create(name="short")
    item.name = "shorter"
    item.save()
    item.delete()  # deletes its history: no '-' record, pending notifications point nowhere
    worker.drain()
    assert received(channels.EphemeralChannel) == []
    # Both are parked at once: the first because its record is gone, the object's later one too
    # (its record is gone as well), instead of waiting forever behind the first.
    first, later = Notification.objects.order_by("pk")
    assert (first.state, first.history_type, later.state, later.history_type) == (
        "parked",
        "+",
        "parked",
        "~",
    )
    assert "no longer exists" in first.last_error and "no longer exists" in later.last_error
    assert not Notification.objects.filter(state="pending").exists()


def test_clean_duplicate_history_removes_records_of_pending_notifications(worker):
    item = Labelled.objects.create(name="same")
    item.save()  # a duplicate record
    call_command("clean_duplicate_history", "configs.Labelled", "--auto", stdout=StringIO())
    worker.drain()
    assert len(received(channels.LabelledChannel)) == 1
    (parked,) = Notification.objects.filter(state="parked")
    assert "configs.LabelledAudit history_id=" in parked.last_error
    assert "no longer exists" in parked.last_error


def test_clean_old_history_removes_records_of_pending_notifications(worker):
    Labelled.objects.create(name="old")
    call_command("clean_old_history", "--auto", "--days", "0", stdout=StringIO())
    worker.drain()
    assert received(channels.LabelledChannel) == []
    assert Notification.objects.get().state == "parked"


def test_history_disabled_or_skipped_sends_nothing(worker):
    with override_settings(SIMPLE_HISTORY_ENABLED=False):
        Labelled.objects.create(name="disabled")
    item = Labelled(name="skipped")
    item.skip_history_when_saving = True
    item.save()
    del item.skip_history_when_saving
    item.name = "without record"
    item.save_without_historical_record()
    assert worker.process_available(timeout=0.5) == 0
    assert not Notification.objects.exists()
    assert not Labelled.history.exists()
    assert Labelled.objects.count() == 2


def test_proxy_channel_and_pgpubsub_decorator_and_routing_are_check_errors(isolated_registry):
    from dataclasses import dataclass

    import pgpubsub
    from pgpubsub.channel import registry

    from pgpubsub_simplehistory import HistoryTriggerChannel, checks
    from testproject.configs.models import PlaceProxy

    @dataclass
    class ProxyChannel(HistoryTriggerChannel):
        model = PlaceProxy

    @dataclass
    class MixedUp(HistoryTriggerChannel):
        model = Labelled

    def wrong(old, new):
        return None

    registry[MixedUp].append(wrong)  # what @pgpubsub.post_save_listener(MixedUp) registers
    assert pgpubsub.post_save_listener  # the decorator users confuse with ours

    class SplitRouter:
        def db_for_write(self, model, **hints):
            return "history_db" if model._meta.model_name == "labelledaudit" else None

    try:
        with override_settings(DATABASE_ROUTERS=[SplitRouter()]):
            messages = checks.check_channels(None)
    finally:
        del registry[MixedUp]
    ids = [m.id for m in messages]
    assert ids.count("pgpubsub_simplehistory.E003") == 1
    assert ids.count("pgpubsub_simplehistory.E005") == 1
    # both channels of Labelled (configs.LabelledChannel and MixedUp) are split by the router
    assert [m.obj for m in messages if m.id.endswith("E006")] == [channels.LabelledChannel, MixedUp]
    proxy = next(m for m in messages if m.id.endswith("E003"))
    assert "configs.Place" in proxy.hint
    routing = next(m for m in messages if m.id.endswith("E006"))
    assert "'history_db'" in routing.msg and "use_base_model_db=True" in routing.hint


def test_uninstalled_trigger_is_a_warning_and_listen_refuses_to_start(manage):
    from django.db import connection

    from pgpubsub_simplehistory.checks import check_triggers_installed

    assert check_triggers_installed(None, databases=["default"]) == []
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE configs_audit_one RENAME TO configs_audit_one_kept")
        cursor.execute("CREATE TABLE configs_audit_one (LIKE configs_audit_one_kept INCLUDING ALL)")
    try:
        (warning,) = check_triggers_installed(None, databases=["default"])
        assert warning.id == "pgpubsub_simplehistory.W002"
        assert "LabelledChannel" in warning.msg and "uninstalled" in warning.msg
        proc = manage("listen")
        assert proc.wait(60) == 1
        assert "LabelledChannel" in proc.stderr_text()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE configs_audit_one")
            cursor.execute("ALTER TABLE configs_audit_one_kept RENAME TO configs_audit_one")


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_use_base_model_db_keeps_change_history_and_notification_on_one_alias():
    from testproject.configs.models import Remote

    from .conftest import DrainingWorker

    item = Remote.objects.using("other").create(name="far")
    item.name = "farther"
    item.save(using="other")
    assert Remote.history.using("other").count() == 2
    assert not Remote.history.using("default").exists()
    assert Notification.objects.using("other").count() == 2
    assert not Notification.objects.using("default").exists()

    worker = DrainingWorker([channels.RemoteChannel], using="other", sweep_interval=3600)
    worker.start()
    worker.drain()
    worker.close()
    insert, update = received(channels.RemoteChannel)
    assert insert.new["name"] == "far"
    assert (update.old["name"], update.new["name"]) == ("far", "farther")
    assert update.new["_db"] == "other"
    assert not Notification.objects.using("other").exists()
