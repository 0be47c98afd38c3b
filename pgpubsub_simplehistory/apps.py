from __future__ import annotations

from django.apps import AppConfig


class PgpubsubSimplehistoryConfig(AppConfig):
    name = "pgpubsub_simplehistory"
    verbose_name = "pgpubsub simple-history"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
