from dataclasses import dataclass

from pgpubsub import TriggerChannel

from pgpubsub_simplehistory import HistoryTriggerChannel

from .models import OursItem, PubsubItem


@dataclass
class OursChannel(HistoryTriggerChannel):
    model = OursItem
    history_types = "+~"  # inserts and updates only: its trigger skips deletes
    lock_notifications = True


@dataclass
class PubsubChannel(TriggerChannel):
    model = PubsubItem
    lock_notifications = True
