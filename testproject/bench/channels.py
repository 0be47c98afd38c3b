from dataclasses import dataclass

from pgpubsub import TriggerChannel

from pgpubsub_simplehistory import HistoryTriggerChannel

from .models import OursItem, PubsubItem, PubsubThreeItem


@dataclass
class OursChannel(HistoryTriggerChannel):
    model = OursItem
    history_types = "+~"  # inserts and updates only: its trigger skips deletes
    lock_notifications = True


@dataclass
class PubsubChannel(TriggerChannel):
    model = PubsubItem
    lock_notifications = True


@dataclass
class PubsubThreeChannelA(TriggerChannel):
    model = PubsubThreeItem
    lock_notifications = True


@dataclass
class PubsubThreeChannelB(TriggerChannel):
    model = PubsubThreeItem
    lock_notifications = True


@dataclass
class PubsubThreeChannelC(TriggerChannel):
    model = PubsubThreeItem
    lock_notifications = True
