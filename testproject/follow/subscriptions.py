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
