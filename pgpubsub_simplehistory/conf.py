"""Every ``PGPUBSUB_SIMPLEHISTORY_*`` setting, read in this one place (with its default).

Read at the moment they are needed, so that ``override_settings`` and a settings change between
two batches apply. docs/reference/settings.md documents each; a test checks that every setting
read here is documented.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

PREFIX = "PGPUBSUB_SIMPLEHISTORY_"

#: Seconds between two sweeps of the stored notifications by a worker.
DEFAULT_SWEEP_INTERVAL = 2.0
#: Stored notifications claimed (and committed) together at most.
DEFAULT_BATCH_SIZE = 50


def _get(name: str, default: Any) -> Any:
    return getattr(settings, PREFIX + name, default)


def sweep_interval() -> float:
    return float(_get("SWEEP_INTERVAL", DEFAULT_SWEEP_INTERVAL))


def batch_size() -> int:
    return int(_get("BATCH_SIZE", DEFAULT_BATCH_SIZE))


def prepared_statements() -> bool:
    return bool(_get("PREPARED_STATEMENTS", True))


#: Seconds a claimed notification stays leased to its worker; after that the worker is presumed
#: dead and the notification is reaped as a failed attempt.
DEFAULT_LEASE_SECONDS = 10.0
#: Seconds one listener may run before its worker releases the rest of its batch.
DEFAULT_RELEASE_AFTER = 1.0


def lease_seconds() -> float:
    return float(_get("LEASE_SECONDS", DEFAULT_LEASE_SECONDS))


def release_after() -> float:
    return float(_get("RELEASE_AFTER", DEFAULT_RELEASE_AFTER))


#: Seconds between a worker's summary lines (at INFO) of what it settled per channel.
DEFAULT_SUMMARY_INTERVAL = 60.0


def statistics() -> bool:
    """Whether workers keep per-minute statistics for the admin dashboard."""
    return bool(_get("STATISTICS", True))


def summary_interval() -> float:
    return float(_get("SUMMARY_INTERVAL", DEFAULT_SUMMARY_INTERVAL))


#: Seconds between two looks of a worker for new history of its durable subscriptions.
DEFAULT_SUBSCRIPTION_POLL = 0.1


def subscription_poll() -> float:
    return float(_get("SUBSCRIPTION_POLL", DEFAULT_SUBSCRIPTION_POLL))
