"""System checks: misconfigurations that would lose or corrupt events are refused at start.

====================================  ==========================================================
``pgpubsub_simplehistory.E001``       a history channel's model has no ``HistoricalRecords``
``pgpubsub_simplehistory.E002``       ``pgpubsub`` is listed before this app in INSTALLED_APPS
                                      (``manage.py listen`` would be django-pgpubsub's command)
``pgpubsub_simplehistory.E003``       a history channel on a proxy model (simple-history does not
                                      track saves through proxies)
``pgpubsub_simplehistory.E004``       ``pgpubsub`` or ``pgtrigger`` missing from INSTALLED_APPS
``pgpubsub_simplehistory.W001``       saves of a channel's model are not atomic with their history
                                      row (plain simple-history ``HistoricalRecords``)
====================================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .exceptions import ChannelConfigurationError
from .records import saves_are_atomic
from .subscribe import history_channels

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
            channel.history_model()
        except ChannelConfigurationError as exc:
            errors.append(Error(str(exc), obj=channel, id=f"{APP}.E001"))
            continue
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
