"""Models followed by durable subscriptions (tests/test_subscriptions.py)."""

from django.db import models

from pgpubsub_simplehistory import HistoricalRecords


class Label(models.Model):
    name = models.CharField(max_length=30)

    def __str__(self) -> str:
        return self.name


class Entry(models.Model):
    title = models.CharField(max_length=100)
    status = models.CharField(max_length=20, default="draft")
    tags = models.ManyToManyField(Label, blank=True)
    history = HistoricalRecords(m2m_fields=[tags])

    def __str__(self) -> str:
        return self.title


class Delivered(models.Model):
    """What a subscription's listener received, written in its transaction."""

    subscription = models.CharField(max_length=100)
    history_id = models.BigIntegerField()
    history_type = models.CharField(max_length=1)
    object_id = models.BigIntegerField()
    status = models.CharField(max_length=20, blank=True)
    old_status = models.CharField(max_length=20, blank=True, null=True)  # noqa: DJ001 (None: no old)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.subscription} {self.history_id}"
