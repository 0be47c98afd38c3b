"""What this package relies on in django-pgpubsub, django-simple-history and django-pgtrigger
internals.

Those internals are used only in the adapters ``pgpubsub_simplehistory._pgpubsub``,
``_simple_history`` and ``_pgtrigger`` (docs/architecture.md, "Adapters"). Each test fails when
upstream changes something an adapter relies on: fix the adapter, not the test.
"""

from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys

import pytest

from pgpubsub_simplehistory import _pgpubsub, _pgtrigger, _simple_history
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


# django-pgpubsub: the empty-payload recovery convention (``_pgpubsub.recover_plain_channel``).


def test_pgpubsub_routes_an_empty_payload_to_the_recovery_processor_only():
    """An empty payload on a lockable channel's listen name means "process what is stored"."""
    from pgpubsub.listen import (
        InvalidNotificationProcessor,
        LockableNotificationProcessor,
        NotificationProcessor,
        NotificationRecoveryProcessor,
    )
    from pgpubsub.notify import process_stored_notifications

    from testproject.evolving.channels import WidgetJsonChannel

    assert WidgetJsonChannel.lock_notifications
    recover = _pgpubsub._RecoveryNotify(WidgetJsonChannel)
    assert (recover.channel, recover.payload) == (WidgetJsonChannel.listen_safe_name(), "")
    for rejecting in (NotificationProcessor, LockableNotificationProcessor):
        with pytest.raises(InvalidNotificationProcessor):
            rejecting(recover, _pgpubsub._NoPollWrapper())
    processor = NotificationRecoveryProcessor(recover, _pgpubsub._NoPollWrapper())
    assert processor.channel_cls is WidgetJsonChannel  # found by listen name in the registry

    stored = _pgpubsub._RecoveryNotify(WidgetJsonChannel)
    stored.payload = '{"old": null}'
    with pytest.raises(InvalidNotificationProcessor):
        NotificationRecoveryProcessor(stored, _pgpubsub._NoPollWrapper())
    # django-pgpubsub's own sender of the convention (``listen --recover``).
    assert "payload = ''" in inspect.getsource(process_stored_notifications)


@pytest.mark.django_db
def test_pgpubsub_recovery_runs_the_callbacks_of_stored_notifications_and_deletes_them():
    from pgpubsub.models import Notification

    from testproject.evolving.channels import WidgetJsonChannel
    from testproject.evolving.models import Widget
    from testproject.shop.models import ReceivedEvent

    listen_name = WidgetJsonChannel.listen_safe_name()
    widget = Widget.objects.create(name="stored")  # django-pgpubsub's trigger stores it
    assert Notification.objects.filter(channel=listen_name).count() == 1

    _pgpubsub.recover_plain_channel(WidgetJsonChannel)

    assert not Notification.objects.filter(channel=listen_name).exists()
    (received,) = ReceivedEvent.objects.filter(listener="on_widget_json")
    assert (received.object_id, received.history_type) == (str(widget.pk), "+")


# django-pgtrigger: what ``_pgtrigger.pending_installs`` and ``accept_meta_triggers`` rely on.


def test_pgtrigger_compiled_trigger_carries_the_hash_a_migration_records():
    from django.db.migrations.state import DEFAULT_NAMES
    from pgtrigger.compiler import Trigger as CompiledTrigger
    from pgtrigger.migrations import AddTrigger

    from pgpubsub_simplehistory import registry

    trigger = registry.trigger_of(OrderChannel)
    compiled = trigger.compile(HistoricalOrder)
    assert isinstance(compiled, CompiledTrigger)
    assert isinstance(compiled.hash, str) and len(compiled.hash) == 40
    identity = ("shop", "historicalorder", compiled.hash)
    assert _pgtrigger.identify(trigger, HistoricalOrder) == identity
    # A migration file rebuilds the compiled trigger from its deconstruction: same hash.
    path, args, kwargs = compiled.deconstruct()
    assert path == "pgtrigger.compiler.Trigger"
    assert CompiledTrigger(*args, **kwargs).hash == compiled.hash
    assert trigger.compile(HistoricalOrder).hash == compiled.hash  # stable

    assert list(inspect.signature(AddTrigger).parameters) == ["model_name", "trigger"]
    operation = AddTrigger(model_name="HistoricalOrder", trigger=compiled)
    assert (operation.model_name, operation.trigger) == ("HistoricalOrder", compiled)
    assert "triggers" in DEFAULT_NAMES  # a migration's CreateModel may carry ``triggers``


def _plan_of(monkeypatch, plan):
    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(MigrationExecutor, "migration_plan", lambda self, *a, **kw: plan(self))


@pytest.mark.django_db
def test_pgtrigger_pending_installs_reads_add_trigger_and_create_model_triggers(monkeypatch):
    import pgtrigger
    from django.db import migrations
    from pgtrigger.migrations import AddTrigger

    from pgpubsub_simplehistory import registry
    from testproject.shop.models import HistoricalCustomer

    assert _pgtrigger.pending_installs("default") == set()  # the test database is migrated

    order_trigger = registry.trigger_of(OrderChannel)
    customer_trigger = next(t for m, t in pgtrigger.registered() if m is HistoricalCustomer)
    forward = migrations.Migration("0099_pending", "shop")
    forward.operations = [
        AddTrigger(model_name="HistoricalOrder", trigger=order_trigger.compile(HistoricalOrder)),
        migrations.CreateModel(
            name="HistoricalCustomer",
            fields=[],
            options={"triggers": [customer_trigger.compile(HistoricalCustomer)]},
        ),
    ]
    backward = migrations.Migration("0098_reverted", "shop")
    backward.operations = [
        AddTrigger(model_name="Ignored", trigger=order_trigger.compile(HistoricalOrder))
    ]
    _plan_of(monkeypatch, lambda executor: [(forward, False), (backward, True)])

    assert _pgtrigger.pending_installs("default") == {
        _pgtrigger.identify(order_trigger, HistoricalOrder),
        _pgtrigger.identify(customer_trigger, HistoricalCustomer),
    }


@pytest.mark.django_db
def test_pgtrigger_migrations_install_the_defined_triggers_as_pending_installs_sees_them(
    monkeypatch,
):
    """From an empty database, the project's migrations install every channel's trigger as
    defined now: ``makemigrations`` writes ``AddTrigger`` operations with the compiled hash."""
    from pgpubsub_simplehistory import registry

    def from_scratch(executor):
        graph = executor.loader.graph
        keys = dict.fromkeys(k for leaf in graph.leaf_nodes() for k in graph.forwards_plan(leaf))
        return [(graph.nodes[key], False) for key in keys]

    _plan_of(monkeypatch, from_scratch)
    pending = _pgtrigger.pending_installs("default")
    defined = {
        _pgtrigger.identify(registry.trigger_of(channel), channel.history_model())
        for channel in registry.channels()
        if registry.trigger_of(channel) is not None
    }
    assert defined and defined <= pending


def test_pgtrigger_apps_import_makes_django_accept_meta_triggers():
    """Without ``pgtrigger`` installed, ``accept_meta_triggers`` is what lets models load."""
    code = (
        "from django.conf import settings; settings.configure(INSTALLED_APPS=[])\n"
        "from django.db.models import options\n"
        "assert 'triggers' not in options.DEFAULT_NAMES\n"
        "from pgpubsub_simplehistory import _pgtrigger\n"
        "_pgtrigger.accept_meta_triggers()\n"
        "assert 'triggers' in options.DEFAULT_NAMES\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# django-simple-history: what ``_simple_history.FinalizeHookRecords`` and its readers rely on.


def test_simple_history_records_keep_their_options_as_attributes():
    from simple_history.models import HistoricalRecords

    parameters = inspect.signature(HistoricalRecords).parameters
    assert parameters["inherit"].default is False
    assert parameters["use_base_model_db"].default is False
    records = HistoricalRecords(inherit=True, use_base_model_db=True)
    assert records.inherit is True
    assert _simple_history.writes_history_with_model(records) is True
    assert _simple_history.writes_history_with_model(HistoricalRecords()) is False


def test_simple_history_finalize_marks_the_model_it_attached_history_to():
    from simple_history.exceptions import MultipleRegistrationsError

    from pgpubsub_simplehistory import tracking

    tracker = tracking._trackers[Order]
    assert (tracker.cls, _simple_history.history_manager_name(tracker)) == (Order, "history")
    assert Order._meta.simple_history_manager_attribute == "history"
    # Upstream's finalize reads the same mark: a second finalize of the model is refused.
    with pytest.raises(MultipleRegistrationsError):
        tracker.finalize(Order)


def test_simple_history_finalize_hook_runs_for_each_model_simple_history_tracks():
    """``history_attached`` ran exactly for the concrete models each ``HistoricalRecords``
    attached history to: declared, inherited (``inherit=True``), registered, per database."""
    from django.contrib.auth.models import User

    from pgpubsub_simplehistory import tracking
    from testproject.configs.models import Animal, Cat, Dog, Place, PlaceProxy, Remote, Restaurant

    tracked = (Order, Product, Cat, Dog, Place, Restaurant, Remote, User)
    for model in tracked:
        tracker = tracking._trackers[model]
        assert _simple_history.tracks(tracker, model), model
        assert _simple_history.history_manager_name(tracker) == "history"
        assert isinstance(model.__dict__["history"], _simple_history.CachedHistoryDescriptor)
    assert Animal not in tracking._trackers and PlaceProxy not in tracking._trackers
    inherited = tracking._trackers[Cat]
    assert inherited is tracking._trackers[Dog] and inherited.cls is Animal and inherited.inherit
    assert not _simple_history.tracks(inherited, Place)
    assert not _simple_history.tracks(tracking._trackers[Place], Restaurant)
    assert not _simple_history.tracks(tracking._trackers[Place], PlaceProxy)
    assert tracking._trackers[User].cls is User  # set by simple_history.register
    assert [m for m in tracked if tracking.history_written_with_model(m)] == [Remote]
