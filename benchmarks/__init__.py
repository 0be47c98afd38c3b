"""The benchmark suite: ``python -m benchmarks`` or ``nox -s bench`` (see README, Performance)."""
