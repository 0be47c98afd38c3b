"""Benchmark listeners: trivial, or recording their start time when BENCH_RECORD=1."""

from __future__ import annotations

import os
import time
from typing import Any

import pgpubsub

import pgpubsub_simplehistory as psh

from .channels import (
    OursChannel,
    PubsubChannel,
    PubsubThreeChannelA,
    PubsubThreeChannelB,
    PubsubThreeChannelC,
)
from .models import Seen
from .subscriptions import CatchUp, ThreeA, ThreeB, ThreeC

RECORD = os.environ.get("BENCH_RECORD") == "1"


@psh.post_save_listener(OursChannel)
def ours_listener(old: Any, new: Any) -> None:
    if RECORD:
        Seen.objects.create(
            variant="ours", object_id=new.pk, counter=new.counter, started=time.time()
        )


@pgpubsub.post_save_listener(PubsubChannel)
def pubsub_listener(old: Any, new: Any) -> None:
    if RECORD:
        Seen.objects.create(
            variant="pgpubsub", object_id=new.pk, counter=new.counter, started=time.time()
        )


@psh.post_save_listener(CatchUp)
@psh.post_save_listener(ThreeA)
@psh.post_save_listener(ThreeB)
@psh.post_save_listener(ThreeC)
def followed(old: Any, new: Any) -> None:
    """Trivial: the catch-up rate is the library's."""


@pgpubsub.post_save_listener(PubsubThreeChannelA)
@pgpubsub.post_save_listener(PubsubThreeChannelB)
@pgpubsub.post_save_listener(PubsubThreeChannelC)
def pubsub_three(old: Any, new: Any) -> None:
    """Trivial (the three channels are measured on the write path only)."""
