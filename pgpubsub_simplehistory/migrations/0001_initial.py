# The queue table and its SQL functions (sql/*.sql, loaded through queue.sql_function).

import django.utils.timezone
from django.db import migrations, models

from pgpubsub_simplehistory.queue import sql_function


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Notification",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "listen_name",
                    models.CharField(
                        help_text="The channel's Postgres name (listen_safe_name()).",
                        max_length=63,
                    ),
                ),
                (
                    "model",
                    models.CharField(
                        help_text="app_label.ModelName at change time.", max_length=200
                    ),
                ),
                ("history_model", models.CharField(max_length=200)),
                ("history_id", models.CharField(max_length=64)),
                ("history_type", models.CharField(max_length=1)),
                (
                    "object_id",
                    models.CharField(
                        help_text="Primary key of the changed object.", max_length=255
                    ),
                ),
                (
                    "migration_id_at_change",
                    models.IntegerField(
                        help_text="Latest django_migrations.id of the model's apps at change time.",
                        null=True,
                    ),
                ),
                ("context", models.JSONField(blank=True, default=dict)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "state",
                    models.CharField(
                        choices=[("pending", "pending"), ("parked", "parked")],
                        default="pending",
                        max_length=8,
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0)),
                (
                    "available_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now,
                        help_text="Not claimed before this time (backoff).",
                    ),
                ),
                ("last_error", models.TextField(blank=True, default="")),
                ("last_traceback", models.TextField(blank=True, default="")),
                (
                    "leased_by",
                    models.CharField(
                        blank=True,
                        default="",
                        help_text="The worker that claimed it (host:pid).",
                        max_length=100,
                    ),
                ),
                (
                    "leased_until",
                    models.DateTimeField(
                        blank=True,
                        help_text="Claimed until then; afterwards its worker is presumed dead.",
                        null=True,
                    ),
                ),
            ],
            options={
                "db_table": "pgpubsub_simplehistory_notification",
                "ordering": ["id"],
                "permissions": [
                    ("replay_notification", "Can replay the historical record of a notification")
                ],
                "indexes": [
                    models.Index(
                        condition=models.Q(("leased_until__isnull", True), ("state", "pending")),
                        fields=["listen_name", "available_at", "id"],
                        name="psh_notification_claim",
                    ),
                    models.Index(
                        fields=["listen_name", "object_id", "id"],
                        name="psh_notification_object",
                    ),
                    models.Index(
                        condition=models.Q(("leased_until__isnull", False)),
                        fields=["leased_until"],
                        name="psh_notification_leased",
                    ),
                ],
            },
        ),
        migrations.RunSQL(
            sql_function("enqueue_v1"),
            "DROP FUNCTION pgpubsub_simplehistory_enqueue_v1"
            "(text, text, text, text, text, text, bigint, text)",
        ),
        migrations.RunSQL(
            sql_function("claim_v1"),
            "DROP FUNCTION pgpubsub_simplehistory_claim_v1"
            "(text[], text[], integer, text, double precision)",
        ),
    ]
