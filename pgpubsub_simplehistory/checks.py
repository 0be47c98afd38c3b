"""System checks: misconfigurations that would lose or corrupt events are refused at start.

====================================  ==========================================================
``pgpubsub_simplehistory.E001``       a history channel's model has no ``HistoricalRecords``
``pgpubsub_simplehistory.E002``       ``pgpubsub`` is listed before this app in INSTALLED_APPS
                                      (``manage.py listen`` would be django-pgpubsub's command)
``pgpubsub_simplehistory.E003``       a history channel on a proxy model (simple-history does not
                                      track saves through proxies)
``pgpubsub_simplehistory.E004``       ``pgpubsub`` or ``pgtrigger`` missing from INSTALLED_APPS
``pgpubsub_simplehistory.E005``       django-pgpubsub's decorator used on a history channel
``pgpubsub_simplehistory.E006``       history routed to another database than its model (a change
                                      and its history cannot commit together)
``pgpubsub_simplehistory.W001``       saves of a channel's model are not atomic with their history
                                      row (plain simple-history ``HistoricalRecords``)
``pgpubsub_simplehistory.W002``       a channel's trigger is not installed or outdated in the
                                      database (``check --database``; ``listen`` refuses to start)
``pgpubsub_simplehistory.W003``       ``PGPUBSUB_SIMPLEHISTORY_BATCH_SIZE`` above 64 (a batch would
                                      overflow Postgres's subtransaction cache)
====================================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .exceptions import ChannelConfigurationError
from .records import history_written_with_model, saves_are_atomic
from .subscribe import history_channels, trigger_of

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
    errors: list[CheckMessage] = []
    for channel in history_channels():
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
            errors.append(Error(str(exc), obj=channel, id=f"{APP}.E001"))
            continue
        errors.extend(_check_pgpubsub_decorators(channel))
        errors.extend(_check_routing(channel, model))
        if not saves_are_atomic(model):
            errors.append(
                Warning(
                    f"saves of {model._meta.label} are not atomic with their history row: in "
                    "autocommit a change can commit without its history and notification",
                    hint="Import HistoricalRecords from pgpubsub_simplehistory instead of "
                    "simple_history.models.",
                    obj=model,
                    id=f"{APP}.W001",
                )
            )
    return errors


def _concrete_label(model: type[Any]) -> str:
    concrete = model._meta.concrete_model
    return str(concrete._meta.label) if concrete is not None else str(model._meta.label)


def _check_pgpubsub_decorators(channel: type[Any]) -> list[CheckMessage]:
    from pgpubsub.channel import registry

    ours = {s.callback for s in channel.subscriptions()}
    foreign = [cb for cb in registry.get(channel, []) if cb not in ours]
    return [
        Error(
            f"listener {cb.__module__}.{cb.__qualname__} is subscribed to history channel "
            f"{channel.name()} with django-pgpubsub's decorator: it would get the live row "
            "through a trigger on the model's table, not the historical record",
            hint="Use pgpubsub_simplehistory.post_save_listener (and the other "
            "pgpubsub_simplehistory decorators) for history channels.",
            obj=channel,
            id=f"{APP}.E005",
        )
        for cb in foreign
    ]


def _check_routing(channel: type[Any], model: type[Any]) -> list[CheckMessage]:
    from django.db import router

    history_model = channel.history_model()
    model_db = router.db_for_write(model)
    history_db = router.db_for_write(history_model)
    if model_db == history_db or history_written_with_model(model):
        return []
    return [
        Error(
            f"history of {model._meta.label} is written to database {history_db!r} while "
            f"{model._meta.label} is written to {model_db!r}: a change and its history row "
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
    """Runs with ``manage.py check --database <alias>``; ``listen`` runs it on start."""
    return [
        Warning(problem, hint="Run makemigrations and migrate.", id=f"{APP}.W002")
        for problem in trigger_problems(databases or [])
    ]


def trigger_problems(
    databases: Sequence[str], channels: Sequence[type[Any]] | None = None
) -> list[str]:
    """Channels (default: all) whose trigger is not installed as defined, per database alias."""
    from pgtrigger.core import INSTALLED

    problems = []
    for alias in databases:
        for channel in channels if channels is not None else history_channels():
            trigger = trigger_of(channel)
            try:
                history_model = channel.history_model()
            except ChannelConfigurationError:
                continue
            model: Any = history_model  # django-pgtrigger annotates model classes as instances
            if trigger is None or not trigger.allow_migrate(model, alias):
                continue
            status, _ = trigger.get_installation_status(model, database=alias)
            if status != INSTALLED:
                problems.append(
                    f"the trigger of {channel.name()} on {history_model._meta.db_table} is "
                    f"{status.lower()} in database {alias!r}: no notification is sent"
                )
    return problems


@register(Tags.compatibility)
def check_batch_size(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    from .processing import MAX_CACHED_SUBTRANSACTIONS, batch_size

    size = batch_size()
    if size <= MAX_CACHED_SUBTRANSACTIONS:
        return []
    return [
        Warning(
            f"PGPUBSUB_SIMPLEHISTORY_BATCH_SIZE is {size}: each notification of a batch but the "
            "first runs in a savepoint, and a transaction with more than "
            f"{MAX_CACHED_SUBTRANSACTIONS} subtransactions that wrote overflows Postgres's "
            "subtransaction cache, which slows down every session's snapshot checks while the "
            "batch runs",
            hint=f"Use a batch size of at most {MAX_CACHED_SUBTRANSACTIONS} (default 50).",
            id=f"{APP}.W003",
        )
    ]
