from django.apps import AppConfig


class EvolvingConfig(AppConfig):
    """A model whose migrations break its old rows in every way the seed scenario names."""

    name = "testproject.evolving"
    label = "evolving"

    def ready(self) -> None:
        from . import listeners  # noqa: F401
