"""django-simple-history configurations, each with a history channel (see channels.py)."""

import uuid

from django.contrib.auth.models import User
from django.db import models

from pgpubsub_simplehistory import HistoricalRecords, register


class Labelled(models.Model):
    """``custom_model_name`` (a string) and ``table_name``."""

    name = models.CharField(max_length=50)
    history = HistoricalRecords(custom_model_name="LabelledAudit", table_name="configs_audit_one")

    def __str__(self) -> str:
        return self.name


def _audit_name(model_name: str) -> str:
    return f"Audit{model_name}"


class Computed(models.Model):
    """``custom_model_name`` (a callable) and a UUID ``history_id_field``."""

    name = models.CharField(max_length=50)
    history = HistoricalRecords(
        custom_model_name=_audit_name,
        history_id_field=models.UUIDField(default=uuid.uuid4),
    )

    def __str__(self) -> str:
        return self.name


class Animal(models.Model):
    """Abstract base: every concrete child gets its own history (``inherit=True``)."""

    name = models.CharField(max_length=50)
    history = HistoricalRecords(inherit=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.name


class Cat(Animal):
    lives = models.IntegerField(default=9)


class Dog(Animal):
    good = models.BooleanField(default=True)


class Place(models.Model):
    name = models.CharField(max_length=50)
    history = HistoricalRecords()

    def __str__(self) -> str:
        return self.name


class Restaurant(Place):
    """Multi-table inheritance: the child's history carries the parent's fields."""

    serves = models.CharField(max_length=50)
    history = HistoricalRecords()


class Tag(models.Model):
    name = models.CharField(max_length=30)

    def __str__(self) -> str:
        return self.name


class Article(models.Model):
    """``m2m_fields``: tag changes are recorded (and notified) as '~' records."""

    title = models.CharField(max_length=100)
    tags = models.ManyToManyField(Tag, blank=True)
    history = HistoricalRecords(m2m_fields=[tags])

    def __str__(self) -> str:
        return self.title


class Ephemeral(models.Model):
    """``cascade_delete_history=True``: deleting the object deletes its history (no '-' record)."""

    name = models.CharField(max_length=50)
    history = HistoricalRecords(cascade_delete_history=True)

    def __str__(self) -> str:
        return self.name


class Remote(models.Model):
    """``use_base_model_db=True``: saved with ``using=``, its history goes to the same alias."""

    name = models.CharField(max_length=50)
    history = HistoricalRecords(use_base_model_db=True)

    def __str__(self) -> str:
        return self.name


class PlaceProxy(Place):
    class Meta:
        proxy = True


# A model of another app (django.contrib.auth), its history in this app, with atomic saves.
register(User, app="testproject.configs")
