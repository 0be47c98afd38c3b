"""Benchmark listeners: trivial, or recording their start time when BENCH_RECORD=1."""

from __future__ import annotations

import os
import time
from typing import Any

import pgpubsub

import pgpubsub_simplehistory as psh

from .channels import OursChannel, PubsubChannel
from .models import Seen

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
