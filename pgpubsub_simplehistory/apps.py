from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.conf import settings

from . import _pgtrigger


class PgpubsubSimplehistoryConfig(AppConfig):
    name = "pgpubsub_simplehistory"
    verbose_name = "pgpubsub simple-history"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _accept_meta_triggers()

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)


def _accept_meta_triggers() -> None:
    """Let models declare ``Meta.triggers`` while ``pgtrigger`` is missing from INSTALLED_APPS.

    Django accepts that Meta option only once ``pgtrigger.apps`` has been imported
    (:func:`._pgtrigger.accept_meta_triggers`), which Django does only for an installed app.
    django-pgpubsub's own ``Notification`` model declares triggers, so without
    this every ``manage.py`` command would crash with "'class Meta' got invalid attribute(s):
    triggers" while loading models, before system check ``E004`` could say what is missing.
    App configs are created before any models module is imported: this runs in time.
    """
    installed = {entry.rsplit(".apps.", 1)[0] for entry in settings.INSTALLED_APPS}
    if "pgtrigger" not in installed:
        _pgtrigger.accept_meta_triggers()
