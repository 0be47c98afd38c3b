"""``HistoryEvent``: what a listener can know about the change it receives."""

from __future__ import annotations

import bisect
import datetime
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.db import connections, models

from .history_models import migration_apps


@dataclass(frozen=True)
class MigrationRef:
    """A row of ``django_migrations``."""

    id: int
    app: str
    name: str

    def __str__(self) -> str:
        return f"{self.app}.{self.name}"


@dataclass(frozen=True)
class HistoryEvent:
    """Metadata of one change, passed to listeners that declare an ``event`` argument.

    Attributes:
        channel: Class path of the channel (``shop.channels.OrderChannel``).
        model: Today's model class of the changed object.
        history_id: Primary key of the historical record (int or UUID).
        history_type: ``'+'`` (insert), ``'~'`` (update) or ``'-'`` (delete).
        history_date: When django-simple-history recorded the change.
        history_user_id: Primary key of ``history_user`` (None when unknown).
        history_change_reason: ``history_change_reason`` of the record.
        object_id: Primary key of the changed object.
        context: django-pgpubsub's notification context, when one was set.
        migration_id_at_change: Latest ``django_migrations.id`` of the model's apps when the change
            was notified (for a replay: the latest one applied before ``history_date``).
        replayed: True when delivered by ``replay_history``, not by the listener.
        notification_id: Primary key of the stored notification (lockable channels).
    """

    channel: str
    model: type[models.Model]
    history_id: Any
    history_type: str
    history_date: datetime.datetime
    history_user_id: Any
    history_change_reason: str | None
    object_id: Any
    context: dict[str, Any] = field(default_factory=dict)
    migration_id_at_change: int | None = None
    replayed: bool = False
    notification_id: int | None = None
    using: str = "default"

    @cached_property
    def migration_at_change(self) -> MigrationRef | None:
        """The migration state of the model's apps when the change happened."""
        if self.migration_id_at_change is None:
            return None
        return _migration_by_id(self.using, self.migration_id_at_change)

    @cached_property
    def migration_now(self) -> MigrationRef | None:
        """The latest migration applied today to the model's apps."""
        return _latest_migration(self.using, migration_apps(self.model))

    @property
    def schema_changed(self) -> bool:
        """True when the model's apps were migrated after the change was recorded.

        The instances you receive are today's model classes, built from the historical record as
        migrated since: values of fields added or back-filled after the change come from the
        history table (see ``BackfillHistory``), not from the live row; use :meth:`current` for
        that.
        """
        now = self.migration_now
        at_change = self.migration_id_at_change
        if now is None or at_change is None:
            return False
        return now.id != at_change

    @cached_property
    def deleted(self) -> bool:
        """True when the object no longer exists today."""
        return not self.model._default_manager.using(self.using).filter(pk=self.object_id).exists()

    def current(self) -> models.Model | None:
        """Load the object's live row as it is today (None when it was deleted)."""
        live: models.Model | None = (
            self.model._default_manager.using(self.using).filter(pk=self.object_id).first()
        )
        return live


def _migration_by_id(using: str, migration_id: int) -> MigrationRef | None:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT id, app, name FROM django_migrations WHERE id = %s", [migration_id])
        row = cursor.fetchone()
    return MigrationRef(*row) if row else None


def _latest_migration(
    using: str, apps: list[str], before: datetime.datetime | None = None
) -> MigrationRef | None:
    sql = "SELECT id, app, name FROM django_migrations WHERE app = ANY(%s)"
    params: list[Any] = [apps]
    if before is not None:
        sql += " AND applied <= %s"
        params.append(before)
    with connections[using].cursor() as cursor:
        cursor.execute(sql + " ORDER BY id DESC LIMIT 1", params)
        row = cursor.fetchone()
    return MigrationRef(*row) if row else None


def migration_id_as_of(
    using: str, model: type[models.Model], when: datetime.datetime
) -> int | None:
    """The latest migration of ``model``'s apps applied at ``when`` (used for replays)."""
    ref = _latest_migration(using, migration_apps(model), before=when)
    return ref.id if ref else None


class MigrationTimeline:
    """When each migration of a model's apps was applied: the migration state at any time,
    from one query (replays resolve thousands of records)."""

    def __init__(self, using: str, model: type[models.Model]) -> None:
        with connections[using].cursor() as cursor:
            cursor.execute(
                "SELECT applied, id FROM django_migrations WHERE app = ANY(%s) ORDER BY applied",
                [migration_apps(model)],
            )
            rows = cursor.fetchall()
        self._applied = [applied for applied, _ in rows]
        self._latest: list[int] = []
        for _, migration_id in rows:
            self._latest.append(max(migration_id, self._latest[-1] if self._latest else 0))

    def as_of(self, when: datetime.datetime) -> int | None:
        """The latest ``django_migrations.id`` of the apps applied at or before ``when``."""
        index = bisect.bisect_right(self._applied, when)
        return self._latest[index - 1] if index else None
