from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "testproject.shop"
    label = "shop"

    def ready(self) -> None:
        from . import listeners  # noqa: F401  (subscribes the listeners, registers triggers)
