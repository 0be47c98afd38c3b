"""Durable subscriptions of the benchmarks (benchmarks/subscriptions.py)."""

from pgpubsub_simplehistory import HistorySubscription

from .models import SubOneItem, SubThreeItem


class CatchUp(HistorySubscription):
    """The one subscription of SubOneItem: catches up over its filled history."""

    model = SubOneItem
    name = "bench-catch-up"


class ThreeA(HistorySubscription):
    model = SubThreeItem
    name = "bench-three-a"


class ThreeB(HistorySubscription):
    model = SubThreeItem
    name = "bench-three-b"


class ThreeC(HistorySubscription):
    model = SubThreeItem
    name = "bench-three-c"
