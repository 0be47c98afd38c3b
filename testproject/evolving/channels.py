from dataclasses import dataclass

from pgpubsub import TriggerChannel

from pgpubsub_simplehistory import HistoryTriggerChannel

from .models import Widget


@dataclass
class WidgetChannel(HistoryTriggerChannel):
    model = Widget
    lock_notifications = True


@dataclass
class WidgetJsonChannel(TriggerChannel):
    """django-pgpubsub's own JSON channel on the same model, for comparison."""

    model = Widget
    lock_notifications = True
