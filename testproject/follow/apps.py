from django.apps import AppConfig


class FollowConfig(AppConfig):
    name = "testproject.follow"
    label = "follow"

    def ready(self) -> None:
        from . import listeners  # noqa: F401  (subscribes the listeners)
