"""1. Write cost per save() of an existing row, in autocommit and inside one transaction."""

from __future__ import annotations

from typing import Any

from .harness import interleaved, ratios, sql, summary, table, timed

VARIANTS = {
    "plain": "PlainItem",
    "simple-history": "HistItem",
    "ours (history + lockable channel)": "OursItem",
    "pgpubsub lockable + simple-history": "PubsubItem",
}


MODES = (("autocommit", False), ("one transaction", True))


def _clean(labels: list[str]) -> None:
    from django.apps import apps

    tables = ["pgpubsub_simplehistory_notification", "pgpubsub_notification"]
    for label in labels:
        history = getattr(apps.get_model("bench", label), "history", None)
        if history is not None:
            tables.append(history.model._meta.db_table)
    sql("TRUNCATE " + ", ".join(tables))


def measure(
    variants: dict[str, str], saves: int, repetitions: int
) -> dict[str, dict[str, list[float]]]:
    """µs per ``save()`` of an existing row of each variant's bench model, per mode (autocommit,
    one transaction): ``repetitions`` values each, interleaved, after one warm-up each."""
    from django.apps import apps
    from django.db import transaction

    instances = {}
    for name, model_name in variants.items():
        model = apps.get_model("bench", model_name)
        instances[name] = model.objects.create(name=f"write-{model_name}")
    labels = list(variants.values())
    _clean(labels)

    def saver(name: str, in_transaction: bool) -> Any:
        obj = instances[name]

        def loop() -> None:
            for _ in range(saves):
                obj.counter += 1
                obj.save()

        def one() -> float:
            if in_transaction:
                with transaction.atomic():
                    seconds = timed(loop)
            else:
                seconds = timed(loop)
            _clean(labels)
            return seconds / saves * 1e6  # µs per save

        return one

    measured = {}
    for mode, in_transaction in MODES:
        for name in variants:  # warm-up
            saver(name, in_transaction)()
        measured[mode] = interleaved(
            {name: saver(name, in_transaction) for name in variants}, repetitions
        )
    return measured


def run(saves: int, repetitions: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for mode, runs in measure(VARIANTS, saves, repetitions).items():
        results[mode] = {
            "us_per_save": {name: summary(values) for name, values in runs.items()},
            "ratio_vs_simple_history": {
                name: ratios(values, runs["simple-history"]) for name, values in runs.items()
            },
            "ratio_vs_pgpubsub": {
                name: ratios(values, runs["pgpubsub lockable + simple-history"])
                for name, values in runs.items()
            },
            "repetitions": runs,
        }
    return results


def report(results: dict[str, Any]) -> str:
    out = []
    for mode, data in results.items():
        rows = []
        for name in VARIANTS:
            s = data["us_per_save"][name]
            rows.append(
                [
                    name,
                    s["min"],
                    s["median"],
                    s["max"],
                    data["ratio_vs_simple_history"][name]["median"],
                    data["ratio_vs_pgpubsub"][name]["median"],
                ]
            )
        out.append(f"Write cost per save, {mode} (µs; ratios: median of per-repetition pairs)")
        out.append(
            table(
                ["variant", "min", "median", "max", "x simple-history", "x pgpubsub+history"],
                rows,
            )
        )
    return "\n\n".join(out)
