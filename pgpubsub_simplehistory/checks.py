"""System checks: misconfigurations that would lose or corrupt events, reported by
``manage.py check`` (and before every ``manage.py listen``), never by an import-time crash.

====================================  ==========================================================
``pgpubsub_simplehistory.E001``       a history channel's model has no ``HistoricalRecords``
                                      (or ``model`` is not a model class)
``pgpubsub_simplehistory.E002``       ``pgpubsub`` is listed before this app in INSTALLED_APPS
                                      (``manage.py listen`` would be django-pgpubsub's command)
``pgpubsub_simplehistory.E003``       a history channel on a proxy model (simple-history does not
                                      track saves through proxies)
``pgpubsub_simplehistory.E004``       ``pgpubsub`` or ``pgtrigger`` missing from INSTALLED_APPS
``pgpubsub_simplehistory.E005``       django-pgpubsub's decorator used on a history channel
``pgpubsub_simplehistory.E006``       history routed to another database than its model (a change
                                      and its history cannot commit together)
``pgpubsub_simplehistory.E007``       a listener that cannot work (unknown channel, not a
                                      history channel, a listener argument never passed)
``pgpubsub_simplehistory.E008``       a listener subscribes to history types its channel does
                                      not publish (``history_types``)
``pgpubsub_simplehistory.E009``       a durable subscription follows a model whose history ids are
                                      not numbered (UUIDs)
``pgpubsub_simplehistory.W001``       saves of a channel's model are not atomic with their history
                                      record (plain simple-history ``HistoricalRecords``)
``pgpubsub_simplehistory.W002``       a channel's trigger is not installed or outdated in the
                                      database and no pending migration installs it (``check
                                      --database``, ``migrate``; ``listen`` refuses to start)
====================================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import models, router

from . import _pgpubsub, _pgtrigger, registry
from .exceptions import ChannelConfigurationError
from .history_models import numbered
from .subscriptions import is_stream
from .tracking import history_written_with_model, saves_are_atomic
from .trigger import HistoryOrder, HistoryRemoval

APP = "pgpubsub_simplehistory"


@register(Tags.compatibility)
def check_installed_apps(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    apps = [a.rsplit(".apps.", 1)[0] for a in settings.INSTALLED_APPS]
    errors: list[CheckMessage] = []
    for required in ("pgpubsub", "pgtrigger"):
        if required not in apps:
            errors.append(
                Error(
                    f"{required!r} is not in INSTALLED_APPS",
                    hint=f"Add {required!r} to INSTALLED_APPS (history channels need it).",
                    id=f"{APP}.E004",
                )
            )
    if "pgpubsub" in apps and APP in apps and apps.index("pgpubsub") < apps.index(APP):
        errors.append(
            Error(
                "'pgpubsub' is listed before 'pgpubsub_simplehistory' in INSTALLED_APPS, so "
                "`manage.py listen` runs django-pgpubsub's command, which cannot process "
                "history channels",
                hint="Move 'pgpubsub_simplehistory' above 'pgpubsub' in INSTALLED_APPS.",
                id=f"{APP}.E002",
            )
        )
    return errors


@register(Tags.models)
def check_channels(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = [
        Error(problem, id=f"{APP}.E007") for problem in registry.problems()
    ]
    for channel in registry.channels():
        try:
            model = channel.tracked_model()
            if model._meta.proxy:
                errors.append(
                    Error(
                        f"{channel.name()} publishes proxy model {model._meta.label}: "
                        "django-simple-history does not record saves made through a proxy",
                        hint=f"Use the concrete model {_concrete_label(model)}.",
                        obj=channel,
                        id=f"{APP}.E003",
                    )
                )
                continue
            channel.history_model()
        except ChannelConfigurationError as exc:
            errors.append(
                Error(str(exc), hint=_no_history_hint(channel), obj=channel, id=f"{APP}.E001")
            )
            continue
        errors.extend(_check_pgpubsub_decorators(channel))
        errors.extend(_check_history_types(channel))
        if is_stream(channel) and not numbered(channel.history_model()):
            errors.append(
                Error(
                    f"{channel.subscription.subscription_name()} follows {model._meta.label}, "
                    "whose history ids are not numbered (UUIDs): a durable subscription moves "
                    "along history ids, which must come from a sequence",
                    hint="Follow it with a lockable channel instead, or give its history the "
                    "default AutoField history_id.",
                    obj=channel.subscription,
                    id=f"{APP}.E009",
                )
            )
        errors.extend(_check_routing(channel, model))
        if not saves_are_atomic(model):
            errors.append(
                Warning(
                    f"saves of {model._meta.label} are not atomic with their history record: "
                    "in autocommit a change can commit without its history and notification",
                    hint=_atomic_hint(model),
                    obj=model,
                    id=f"{APP}.W001",
                )
            )
    return errors


def _no_history_hint(channel: type[Any]) -> str:
    model = channel.model
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        return (
            f"Set {channel.__qualname__}.model to the model class itself (import it), not "
            f"{model!r}."
        )
    name = model.__name__
    return (
        f"Add `history = HistoricalRecords()` (from pgpubsub_simplehistory) to {name}, or, for a "
        f"model you do not own, call pgpubsub_simplehistory.register({name}, app=...) in a "
        "models.py of yours; then run makemigrations and migrate."
    )


def _atomic_hint(model: type[Any]) -> str:
    name = model.__name__
    return (
        f"Where {name} declares `history = HistoricalRecords()`, import HistoricalRecords from "
        "pgpubsub_simplehistory instead of simple_history.models; where it is registered with "
        f"simple_history.register({name}, ...) (a model you do not own), call "
        f"pgpubsub_simplehistory.register({name}, ...) instead, with the same arguments (no "
        "migration changes)."
    )


def _concrete_label(model: type[Any]) -> str:
    concrete = model._meta.concrete_model
    return str(concrete._meta.label) if concrete is not None else str(model._meta.label)


def _check_pgpubsub_decorators(channel: type[Any]) -> list[CheckMessage]:
    return [
        Error(
            f"listener {cb.__module__}.{cb.__qualname__} is subscribed to history channel "
            f"{channel.name()} with django-pgpubsub's decorator: it would get the live row "
            "through a trigger on the model's table, not the history record",
            hint="Use pgpubsub_simplehistory.post_save_listener (and the other "
            "pgpubsub_simplehistory decorators) for history channels.",
            obj=channel,
            id=f"{APP}.E005",
        )
        for cb in _pgpubsub.callbacks_of(channel)
    ]


def _check_history_types(channel: type[Any]) -> list[CheckMessage]:
    published = set(channel.history_types)
    errors: list[CheckMessage] = []
    for listener in channel.listeners():
        missing = sorted(listener.history_types - published)
        if not missing:
            continue
        if is_stream(channel):  # a durable subscription: no trigger of its own
            subscription = channel.subscription
            what = (
                f"durable subscription {subscription.subscription_name()} "
                f"[{channel.model._meta.label}], which delivers only"
            )
            fix = f"Add them to {subscription.__qualname__}.history_types"
        else:
            what = f"{channel.name()}, whose trigger publishes only"
            fix = f"Add them to {channel.__qualname__}.history_types (then run makemigrations "
            fix += "and migrate)"
        errors.append(
            Error(
                f"listener {listener.name} subscribes to history type(s) {' '.join(missing)} "
                f"of {what} {' '.join(sorted(published))}",
                hint=f"{fix}, or subscribe with another decorator.",
                obj=channel.subscription if is_stream(channel) else channel,
                id=f"{APP}.E008",
            )
        )
    return errors


def _check_routing(channel: type[Any], model: type[Any]) -> list[CheckMessage]:
    history_model = channel.history_model()
    model_db = router.db_for_write(model)
    history_db = router.db_for_write(history_model)
    if model_db == history_db or history_written_with_model(model):
        return []
    return [
        Error(
            f"history of {model._meta.label} is written to database {history_db!r} while "
            f"{model._meta.label} is written to {model_db!r}: a change and its history record "
            "(and so its notification) cannot commit together",
            hint="Route both models to the same database, or use "
            "HistoricalRecords(use_base_model_db=True).",
            obj=channel,
            id=f"{APP}.E006",
        )
    ]


@register(Tags.database)
def check_triggers_installed(
    app_configs: Sequence[AppConfig] | None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Runs with ``manage.py check --database <alias>``, and so before ``migrate`` applies
    anything: a trigger that one of the migrations about to run installs (the first
    ``migrate`` of a project) is not reported; one that no migration installs is."""
    messages: list[CheckMessage] = []
    for alias in databases or []:
        uninstalled = list(_uninstalled_triggers(alias, registry.channels()))
        if not uninstalled:
            continue
        pending = _pgtrigger.pending_installs(alias)
        for channel, trigger, history_model, status in uninstalled:
            if _pgtrigger.identify(trigger, history_model) in pending:
                continue  # the next migrate installs it as defined
            messages.append(
                Warning(
                    _trigger_problem(channel, history_model, status, alias),
                    hint="Run makemigrations, then migrate: no migration waiting to be "
                    "applied installs it as defined.",
                    obj=channel,
                    id=f"{APP}.W002",
                )
            )
    return messages


def trigger_problems(
    databases: Sequence[str], channels: Sequence[type[Any]] | None = None
) -> list[str]:
    """Channels (default: all) whose trigger is not installed as defined, per database alias."""
    return [
        _trigger_problem(channel, history_model, status, alias)
        for alias in databases
        for channel, _, history_model, status in _uninstalled_triggers(
            alias, channels if channels is not None else registry.channels()
        )
    ]


def _uninstalled_triggers(
    alias: str, channels: Sequence[type[Any]]
) -> Iterator[tuple[type[Any], Any, type[Any], str]]:
    """``(channel, trigger, history model, status)`` of each trigger not installed as defined."""
    for channel in channels:
        triggers = [registry.trigger_of(channel)]
        if is_stream(channel) and _history_model_or_none(channel) is not None:
            history_model = channel.history_model()
            triggers = [
                _pgtrigger.trigger_named(history_model, name)
                for name in (HistoryOrder.name, HistoryRemoval.name)
            ]
        for trigger in triggers:
            if trigger is None:
                continue  # misdeclared: E001/E003/E009 say why
            history_model = channel.history_model()
            status = _pgtrigger.installation_problem(trigger, history_model, alias)
            if status is not None:
                yield channel, trigger, history_model, status


def _history_model_or_none(channel: type[Any]) -> type[Any] | None:
    try:
        return channel.history_model()  # type: ignore[no-any-return]
    except ChannelConfigurationError:
        return None


def _trigger_problem(channel: type[Any], history_model: type[Any], status: str, alias: str) -> str:
    what = "stored" if channel.lock_notifications else "notified"
    return (
        f"the trigger of {channel.name()} on {history_model._meta.db_table} is {status} in "
        f"database {alias!r}: changes of {channel.model._meta.label} are not {what} as "
        f"{channel.name()} declares"
    )
