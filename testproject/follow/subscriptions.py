import os

from pgpubsub_simplehistory import HistorySubscription

from .models import Entry


class EntryIndex(HistorySubscription):
    """From the beginning of history; a listener that fails for status "explode"."""

    model = Entry
    name = "entry-index"
    max_attempts = int(os.environ.get("FOLLOW_MAX_ATTEMPTS", "3"))
    retry_base_delay = float(os.environ.get("FOLLOW_RETRY_BASE_DELAY", "0.2"))


class EntryExport(HistorySubscription):
    """A second consumer of the same model, at its own pace (its listener can be slowed)."""

    model = Entry
    name = "entry-export"
    batch_size = 50


def _starting(spec: str) -> list[type[HistorySubscription]]:
    """``FOLLOW_STARTS="date=2025-01-01,id=7,now=now"``: one subscription ``from-<label>`` per
    item, starting there (digits are a history id), in batches of 2. Declared only in the
    processes given that variable (tests/test_subscription_workers.py), so that the other tests
    see two subscriptions."""
    declared = []
    for item in filter(None, spec.split(",")):
        label, _, start = item.partition("=")
        declared.append(
            type(
                f"EntryFrom{label.title()}",
                (HistorySubscription,),
                {
                    "__module__": __name__,
                    "model": Entry,
                    "name": f"from-{label}",
                    "start": int(start) if start.isdigit() else start,
                    "batch_size": 2,
                },
            )
        )
    return declared


STARTING = _starting(os.environ.get("FOLLOW_STARTS", ""))
