from django.db import models
from simple_history.models import HistoricalRecords as PlainHistoricalRecords

from pgpubsub_simplehistory import HistoricalRecords


class PlainItem(models.Model):
    """No history."""

    name = models.CharField(max_length=50)
    counter = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class HistItem(models.Model):
    """django-simple-history alone."""

    name = models.CharField(max_length=50)
    counter = models.IntegerField(default=0)
    history = PlainHistoricalRecords()

    def __str__(self) -> str:
        return self.name


class OursItem(models.Model):
    """The full pgpubsub-simplehistory setup: atomic history + lockable history channel."""

    name = models.CharField(max_length=50)
    counter = models.IntegerField(default=0)
    history = HistoricalRecords()

    def __str__(self) -> str:
        return self.name


class PubsubItem(models.Model):
    """django-simple-history + django-pgpubsub's lockable JSON TriggerChannel."""

    name = models.CharField(max_length=50)
    counter = models.IntegerField(default=0)
    history = PlainHistoricalRecords()

    def __str__(self) -> str:
        return self.name


class SubOneItem(models.Model):
    """Atomic history followed by one durable subscription (benchmarks/subscriptions.py)."""

    name = models.CharField(max_length=50)
    counter = models.IntegerField(default=0)
    history = HistoricalRecords()

    def __str__(self) -> str:
        return self.name


class SubThreeItem(models.Model):
    """Atomic history followed by three durable subscriptions."""

    name = models.CharField(max_length=50)
    counter = models.IntegerField(default=0)
    history = HistoricalRecords()

    def __str__(self) -> str:
        return self.name


class PubsubThreeItem(models.Model):
    """django-simple-history + three django-pgpubsub lockable channels (three consumers)."""

    name = models.CharField(max_length=50)
    counter = models.IntegerField(default=0)
    history = PlainHistoricalRecords()

    def __str__(self) -> str:
        return self.name


class Seen(models.Model):
    """When a benchmark listener started its callback (latency measurements)."""

    variant = models.CharField(max_length=20)
    object_id = models.IntegerField()
    counter = models.IntegerField()
    started = models.FloatField()

    def __str__(self) -> str:
        return f"{self.variant} {self.object_id}/{self.counter}"
