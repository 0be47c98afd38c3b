"""What this package relies on in django-pgpubsub and django-simple-history internals.

Each test fails when upstream changes something that ``pgpubsub_simplehistory._pgpubsub``,
``records`` or ``resolution`` rely on; fix the adapter, not the test.
"""

from __future__ import annotations

import hashlib
import inspect

import pytest

from pgpubsub_simplehistory import _pgpubsub
from testproject.shop.channels import OrderChannel
from testproject.shop.models import HistoricalOrder, HistoricalProduct, Order, Product


def test_pgpubsub_registry_maps_channel_classes_to_callbacks():
    from pgpubsub.channel import registry

    from testproject.evolving.channels import WidgetJsonChannel

    assert WidgetJsonChannel in registry
    assert all(callable(cb) for cb in registry[WidgetJsonChannel])
    assert WidgetJsonChannel in _pgpubsub.plain_channels()
    assert _pgpubsub.callbacks_of(WidgetJsonChannel) == registry[WidgetJsonChannel]
    assert OrderChannel not in registry  # history channels are in this package's registry only
    assert _pgpubsub.locate("testproject.evolving.channels.WidgetJsonChannel") is WidgetJsonChannel
    assert _pgpubsub.locate("testproject.evolving.channels.Nope") is None
    assert _pgpubsub.locate("nope.nope") is None


def test_listen_safe_name_is_a_short_stable_postgres_identifier():
    expected = "pgpubsub_" + hashlib.sha1(b"testproject.shop.channels.OrderChannel").hexdigest()[:5]
    assert OrderChannel.listen_safe_name() == expected


def test_notification_model_has_the_columns_the_trigger_inserts():
    from pgpubsub.models import Notification

    names = {f.name for f in Notification._meta.get_fields()}
    assert {"id", "channel", "payload", "created_at", "db_version"} <= names
    assert _pgpubsub.plain_notification_table() == "pgpubsub_notification"


def test_pgpubsub_processors_take_a_notify_and_a_connection_wrapper():
    from pgpubsub.listen import (
        InvalidNotificationProcessor,
        LockableNotificationProcessor,
        NotificationProcessor,
        NotificationRecoveryProcessor,
    )

    for cls in (
        NotificationProcessor,
        LockableNotificationProcessor,
        NotificationRecoveryProcessor,
    ):
        assert list(inspect.signature(cls).parameters) == ["notification", "connection_wrapper"]
        assert callable(cls.process)
    assert issubclass(InvalidNotificationProcessor, Exception)


def test_pgpubsub_context_setting_name():
    from pgpubsub.channel import set_notification_context

    assert _pgpubsub.CONTEXT_SETTING in inspect.getsource(set_notification_context)


def test_simple_history_marks_tracked_fields_and_exclusions():
    assert HistoricalProduct._history_excluded_fields == ["stock"]
    assert {f.name for f in HistoricalOrder.tracked_fields} >= {"id", "status", "customer"}
    assert HistoricalOrder.instance_type is Order
    assert Product._meta.simple_history_manager_attribute == "history"


def test_simple_history_finalize_signature_is_what_records_overrides():
    from simple_history.models import HistoricalRecords

    assert list(inspect.signature(HistoricalRecords.finalize).parameters)[:2] == ["self", "sender"]


@pytest.mark.parametrize("model", [Order, Product])
def test_tracked_models_have_atomic_save_base(model):
    from pgpubsub_simplehistory.tracking import saves_are_atomic

    assert saves_are_atomic(model)


@pytest.mark.django_db
def test_cached_history_descriptor_gives_what_simple_history_gives():
    """``_simple_history.CachedHistoryDescriptor`` vs upstream's descriptor on a plain model."""
    from simple_history.manager import HistoryDescriptor

    from pgpubsub_simplehistory._simple_history import CachedHistoryDescriptor
    from testproject.shop.factories import CustomerFactory
    from testproject.shop.models import AuditNote

    # Upstream still builds a new manager class on each access (what the cache avoids) from the
    # attributes the cache reads.
    upstream = AuditNote.__dict__["history"]
    assert type(upstream) is HistoryDescriptor
    assert {"model", "manager_class", "queryset_class"} <= set(vars(upstream))
    assert type(AuditNote.history) is not type(AuditNote.history)

    cached = Order.__dict__["history"]
    assert isinstance(cached, CachedHistoryDescriptor)
    assert type(Order.history) is type(Order.history)
    plain_manager, cached_manager = type(AuditNote.history), type(Order.history)
    assert cached_manager.__name__ == plain_manager.__name__
    assert [c.__name__ for c in cached_manager.__mro__] == [
        c.__name__ for c in plain_manager.__mro__
    ]
    assert cached_manager._queryset_class is plain_manager._queryset_class

    order = Order.objects.create(customer=CustomerFactory(), status="a")
    order.status = "b"
    order.save()
    manager = order.history
    assert (manager.model, manager.instance) == (HistoricalOrder, order)
    assert [h.status for h in manager.all()] == ["b", "a"]
    assert manager.most_recent().status == "b"
    assert Order.history.filter(id=order.pk).count() == 2
    assert Order.history.model is HistoricalOrder and Order.history.instance is None


def test_pgtrigger_installation_status_names_what_the_adapter_compares():
    import pgtrigger.core

    from pgpubsub_simplehistory import _pgtrigger, registry

    assert pgtrigger.core.INSTALLED == _pgtrigger.INSTALLED
    assert {pgtrigger.core.UNINSTALLED, pgtrigger.core.OUTDATED} == {"UNINSTALLED", "OUTDATED"}
    trigger = registry.trigger_of(OrderChannel)
    assert (HistoricalOrder, trigger) in pgtrigger.registered()
    assert callable(trigger.get_installation_status) and callable(trigger.allow_migrate)


@pytest.mark.django_db
def test_pgtrigger_installation_problem_is_none_for_an_installed_trigger():
    from pgpubsub_simplehistory import _pgtrigger, registry

    trigger = registry.trigger_of(OrderChannel)
    assert _pgtrigger.installation_problem(trigger, HistoricalOrder, "default") is None


def test_simple_history_excluded_fields_are_read_by_the_adapter():
    from pgpubsub_simplehistory._simple_history import excluded_fields

    assert excluded_fields(HistoricalProduct) == frozenset({"stock"})
    assert excluded_fields(HistoricalOrder) == frozenset()
