"""A small shop: the example models of the project."""

import uuid

from django.db import models
from simple_history.models import HistoricalRecords as PlainHistoricalRecords

from pgpubsub_simplehistory import HistoricalRecords


class Customer(models.Model):
    name = models.CharField(max_length=100)
    email = models.EmailField(blank=True)
    history = HistoricalRecords()

    def __str__(self) -> str:
        return self.name


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    status = models.CharField(max_length=20, default="new")
    total = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    notes = models.TextField(blank=True)
    history = HistoricalRecords()

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"


class Shipment(models.Model):
    """History ids are UUIDs."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="shipments")
    carrier = models.CharField(max_length=50)
    tracking_code = models.CharField(max_length=50, blank=True)
    history = HistoricalRecords(
        history_id_field=models.UUIDField(default=uuid.uuid4, editable=False)
    )

    def __str__(self) -> str:
        return f"shipment {self.pk}"


class Product(models.Model):
    """``stock`` is excluded from history."""

    sku = models.CharField(max_length=30, unique=True)
    name = models.CharField(max_length=100)
    stock = models.IntegerField(default=7)
    history = HistoricalRecords(excluded_fields=["stock"])

    def __str__(self) -> str:
        return self.sku


class ReceivedEvent(models.Model):
    """What the project's listeners received; written in the listener's own transaction."""

    listener = models.CharField(max_length=100)
    channel = models.CharField(max_length=200)
    history_type = models.CharField(max_length=1)
    history_id = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    old = models.JSONField(null=True)
    new = models.JSONField(null=True)
    extra = models.JSONField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.listener} {self.history_type} {self.object_id}"


class AuditNote(models.Model):
    """Tracked with django-simple-history's own HistoricalRecords (no channel): the control case
    showing why ``pgpubsub_simplehistory.HistoricalRecords`` exists."""

    text = models.CharField(max_length=100)
    history = PlainHistoricalRecords()

    def __str__(self) -> str:
        return self.text
