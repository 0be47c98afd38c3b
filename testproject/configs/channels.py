from dataclasses import dataclass

from django.contrib.auth.models import User

from pgpubsub_simplehistory import HistoryTriggerChannel

from .models import Article, Cat, Computed, Dog, Ephemeral, Labelled, Remote, Restaurant


@dataclass
class LabelledChannel(HistoryTriggerChannel):
    model = Labelled
    lock_notifications = True


@dataclass
class ComputedChannel(HistoryTriggerChannel):
    model = Computed
    lock_notifications = True


@dataclass
class CatChannel(HistoryTriggerChannel):
    model = Cat
    lock_notifications = True


@dataclass
class DogChannel(HistoryTriggerChannel):
    model = Dog
    lock_notifications = True


@dataclass
class RestaurantChannel(HistoryTriggerChannel):
    model = Restaurant
    lock_notifications = True


@dataclass
class ArticleChannel(HistoryTriggerChannel):
    model = Article
    lock_notifications = True


@dataclass
class EphemeralChannel(HistoryTriggerChannel):
    model = Ephemeral
    lock_notifications = True


@dataclass
class UserChannel(HistoryTriggerChannel):
    model = User
    lock_notifications = True


@dataclass
class RemoteChannel(HistoryTriggerChannel):
    model = Remote
    lock_notifications = True
