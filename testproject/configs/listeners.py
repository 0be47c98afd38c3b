"""One recording listener per channel; ``extra`` carries what each configuration must show."""

from __future__ import annotations

from typing import Any

import pgpubsub_simplehistory as psh
from testproject.shop.listeners import record

from . import channels


def _record(old: Any, new: Any, event: psh.HistoryEvent, history: Any) -> None:
    extra: dict[str, Any] = {
        "history_model": type(history)._meta.label,
        "history_user_id": event.history_user_id,
        "history_change_reason": event.history_change_reason,
    }
    if event.model._meta.label == "configs.Article":
        # m2m as of this record: simple-history keeps the through rows of each record
        extra["tags"] = sorted(row.tag.name for row in history.tags.all())
    record(event.channel.rsplit(".", 1)[-1], event, old, new, **extra)


for _channel in (
    channels.LabelledChannel,
    channels.ComputedChannel,
    channels.CatChannel,
    channels.DogChannel,
    channels.RestaurantChannel,
    channels.ArticleChannel,
    channels.EphemeralChannel,
    channels.UserChannel,
    channels.RemoteChannel,
):
    psh.post_save_listener(_channel)(_record)
    psh.post_delete_listener(_channel)(_record)
