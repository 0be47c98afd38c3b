"""The queue: stored notifications of lockable history channels (``Notification``).

One row per change that a lockable channel's listeners still have to see. The history trigger
inserts it in the same transaction as the change (``sql/enqueue_v1.sql``). A worker claims it
(the attempt is counted and the row leased to the worker before any listener runs), then runs
the listeners and deletes it in the transaction in which their writes commit, or records the
failure and, after ``max_attempts``, parks it. A lease that runs out means its worker died: the
row is reaped and counts as a failed attempt. Every statement on this table is in ``queue``.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone


class State(models.TextChoices):
    """Where a stored notification is: waiting for (or in the hands of) a worker, or parked."""

    PENDING = "pending", "pending"
    PARKED = "parked", "parked"


class Notification(models.Model):
    """A change waiting for (or parked by) the listeners of a lockable history channel."""

    id = models.BigAutoField(primary_key=True)
    listen_name = models.CharField(
        max_length=63, help_text="The channel's Postgres name (listen_safe_name())."
    )
    model = models.CharField(max_length=200, help_text="app_label.ModelName at change time.")
    history_model = models.CharField(max_length=200)
    history_id = models.CharField(max_length=64)
    history_type = models.CharField(max_length=1)
    object_id = models.CharField(max_length=255, help_text="Primary key of the changed object.")
    migration_id_at_change = models.IntegerField(
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
    leased_by = models.CharField(
        max_length=100, blank=True, default="", help_text="The worker that claimed it (host:pid)."
    )
    leased_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Claimed until then; afterwards its worker is presumed dead.",
    )

    class Meta:
        db_table = "pgpubsub_simplehistory_notification"
        ordering = ["id"]
        permissions = [
            ("replay_notification", "Can replay the historical record of a notification"),
        ]
        indexes = [
            # The claim: per channel, the unclaimed pending ones, soonest due first.
            models.Index(
                fields=["listen_name", "available_at", "id"],
                name="psh_notification_claim",
                condition=Q(state="pending", leased_until__isnull=True),
            ),
            # Per-object order: is an earlier notification of this object still open?
            models.Index(fields=["listen_name", "object_id", "id"], name="psh_notification_object"),
            # Reaping: claimed notifications whose worker did not settle them in time.
            models.Index(
                fields=["leased_until"],
                name="psh_notification_leased",
                condition=Q(leased_until__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.history_model} {self.history_id} ({self.history_type}) on {self.listen_name}"


class Minute(models.Model):
    """What the workers settled on one channel in one minute (``statistics``): the admin
    dashboard's processed-per-minute and lag chart. Kept for a week."""

    id = models.BigAutoField(primary_key=True)
    listen_name = models.CharField(max_length=63)
    minute = models.DateTimeField(help_text="The start of the minute.")
    processed = models.PositiveIntegerField(default=0)
    retried = models.PositiveIntegerField(default=0)
    parked = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    lag_buckets = ArrayField(
        models.PositiveIntegerField(),
        help_text="Processed notifications per lag bucket (statistics.py).",
    )
    lag_max_ms = models.FloatField(default=0)

    class Meta:
        db_table = "pgpubsub_simplehistory_minute"
        ordering = ["minute"]
        constraints = [
            models.UniqueConstraint(fields=["listen_name", "minute"], name="psh_minute_unique")
        ]

    def __str__(self) -> str:
        return f"{self.listen_name} {self.minute:%Y-%m-%d %H:%M}"


class Position(models.Model):
    """Where a durable subscription is in one model's history (``subscriptions``).

    ``position`` is the last history id it delivered (or skipped into the queue): it delivers
    the records above it, in history order, in the transaction that moves it.
    """

    id = models.BigAutoField(primary_key=True)
    subscription = models.CharField(max_length=200, help_text="The subscription's name.")
    history_model = models.CharField(max_length=200, help_text="app_label.HistoricalModel.")
    listen_name = models.CharField(
        max_length=63, help_text="The key of its stored notifications (failures, held back)."
    )
    position = models.BigIntegerField(default=0)
    paused = models.BooleanField(default=False)
    #: Why it stopped by itself (history removed ahead of it); empty when it runs.
    stopped = models.TextField(blank=True, default="")
    #: History records deleted above the position before it delivered them (a cleanup).
    removed_ahead = models.BigIntegerField(default=0)
    leased_by = models.CharField(max_length=100, blank=True, default="")
    leased_until = models.DateTimeField(null=True, blank=True)
    #: Consecutive claims that started at ``position`` without moving it (a worker died).
    attempts = models.PositiveIntegerField(default=0)
    attempt_from = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    moved_at = models.DateTimeField(null=True, blank=True)
    #: Records per second delivered over the worker's last seconds of moving (its catch-up rate).
    rate = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "pgpubsub_simplehistory_position"
        ordering = ["subscription", "history_model"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "history_model"], name="psh_position_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.subscription} at {self.history_model} {self.position}"
