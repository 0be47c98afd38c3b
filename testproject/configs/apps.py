from django.apps import AppConfig


class ConfigsConfig(AppConfig):
    """One model per django-simple-history configuration that channels must support."""

    name = "testproject.configs"
    label = "configs"

    def ready(self) -> None:
        from . import listeners  # noqa: F401
