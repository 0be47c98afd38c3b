from django.apps import AppConfig


class BenchConfig(AppConfig):
    """Models of the benchmark suite (benchmarks/): one per write-path variant."""

    name = "testproject.bench"
    label = "bench"

    def ready(self) -> None:
        from . import listeners  # noqa: F401
