"""Data migration: every widget gets a priority derived from its name (the new invariant).

RunPython fills the live table; BackfillHistory fills the historical rows too, each from its own
historical name, so that notifications still pending resolve to widgets that have a priority.
"""

from django.db import migrations

from pgpubsub_simplehistory import BackfillHistory


def priority_for(name):
    return len(name) * 10


def fill_live(apps, schema_editor):
    Widget = apps.get_model("evolving", "Widget")
    for widget in Widget.objects.all():
        widget.priority = priority_for(widget.name)
        widget.save(update_fields=["priority"])


def fill_history(record):
    return {"priority": priority_for(record.name)}


class Migration(migrations.Migration):
    dependencies = [
        ("evolving", "0005_add_priority"),
    ]

    operations = [
        migrations.RunPython(fill_live, migrations.RunPython.noop),
        BackfillHistory("Widget", fields=["priority"], function=fill_history),
    ]
