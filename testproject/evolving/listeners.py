from __future__ import annotations

from typing import Any

import pgpubsub

import pgpubsub_simplehistory as psh
from testproject.shop.listeners import record, snapshot
from testproject.shop.models import ReceivedEvent

from .channels import WidgetChannel, WidgetJsonChannel


@psh.post_save_listener(WidgetChannel)
@psh.post_delete_listener(WidgetChannel)
def on_widget_changed(old: Any, new: Any, event: psh.HistoryEvent) -> None:
    current = event.current()
    record(
        "on_widget_changed",
        event,
        old,
        new,
        model=event.model._meta.label,
        schema_changed=event.schema_changed,
        deleted=event.deleted,
        migration_at_change=str(event.migration_at_change),
        migration_now=str(event.migration_now),
        current=snapshot(current),
    )


@pgpubsub.post_save_listener(WidgetJsonChannel)
def on_widget_json(old: Any, new: Any) -> None:
    ReceivedEvent.objects.create(
        listener="on_widget_json",
        channel=WidgetJsonChannel.name(),
        history_type="+" if old is None else "~",
        history_id="",
        object_id=str(new.pk),
        old=snapshot(old),
        new=snapshot(new),
    )
