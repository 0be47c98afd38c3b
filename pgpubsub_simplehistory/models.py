"""The stored notifications of lockable history channels (the processing queue).

One row per change that a lockable channel's listeners still have to see. The history trigger
inserts it in the same transaction as the change; a listener claims it with ``FOR UPDATE SKIP
LOCKED`` and deletes it in the transaction in which the listeners' own writes commit. A row whose
listeners keep failing is retried with backoff, then parked with its error.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone


class State(models.TextChoices):
    PENDING = "pending", "pending"
    PARKED = "parked", "parked"


class Notification(models.Model):
    """A change waiting for (or parked by) the listeners of a lockable history channel."""

    id = models.BigAutoField(primary_key=True)
    channel = models.CharField(max_length=63, help_text="Postgres channel (listen_safe_name).")
    model = models.CharField(max_length=200, help_text="app_label.ModelName at change time.")
    history_model = models.CharField(max_length=200)
    history_id = models.CharField(max_length=64)
    history_type = models.CharField(max_length=1)
    object_key = models.CharField(max_length=255, help_text="Primary key of the changed object.")
    migration = models.IntegerField(
        null=True, help_text="Latest django_migrations.id of the model's apps at change time."
    )
    context = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    available_at = models.DateTimeField(
        default=timezone.now, help_text="Not claimed before this time (backoff)."
    )
    last_error = models.TextField(blank=True, default="")
    last_traceback = models.TextField(blank=True, default="")

    class Meta:
        db_table = "pgpubsub_simplehistory_notification"
        ordering = ["id"]
        permissions = [
            ("replay_notification", "Can replay the historical record of a notification"),
        ]
        indexes = [
            # The claim: oldest pending first.
            models.Index(
                fields=["id"], name="psh_notification_pending", condition=Q(state="pending")
            ),
            # Per-object order: is an earlier notification of this object still open?
            models.Index(fields=["channel", "object_key", "id"], name="psh_notification_object"),
        ]

    def __str__(self) -> str:
        return f"{self.history_model} {self.history_id} ({self.history_type}) on {self.channel}"

    def as_payload(self) -> dict[str, Any]:
        app, _, model = self.model.partition(".")
        return {
            "app": app,
            "model": model,
            "history_model": self.history_model,
            "history_id": self.history_id,
            "history_type": self.history_type,
            "object_id": self.object_key,
            "migration": self.migration,
            "context": self.context,
            "notification_id": self.id,
        }
