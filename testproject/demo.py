"""The demo: a stored notification survives a backward-incompatible migration.

    python -m testproject demo

1. starts Postgres (DATABASE_URL or the embedded server) and creates a fresh demo database;
2. migrates the example app ``evolving`` to 0004: widgets have no ``priority`` yet;
3. with no listener running, the application (as it was at 0004) creates and updates widgets:
   the history trigger stores pointers, django-pgpubsub's JSON channel stores the rows;
4. applies 0005 + 0006: ``priority`` is added NOT NULL and back-filled for every widget;
5. starts ``manage.py listen`` and prints what each listener received.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_DB = "psh_demo"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _demo_database_url() -> str:
    from testproject.pgembed import ensure_database_url, fresh_database

    return fresh_database(ensure_database_url(), DEMO_DB)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    url = _demo_database_url()
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from testproject.evolving.oldcode import OldCode
    from testproject.shop.models import ReceivedEvent

    _say("== 1. database at migration evolving.0004: widgets have no 'priority' field yet")
    call_command("migrate", verbosity=0)
    call_command("migrate", "evolving", "0004", verbosity=0)

    _say("== 2. no listener is running; the application changes two widgets")
    app = OldCode("0004_rename_and_remove_fields")
    first = app.create(name="sprocket", label="small")
    app.update(first, name="sprocket XL")
    second = app.create(name="gear", label="large")
    _say(f"   created widget {first} 'sprocket', renamed it 'sprocket XL'; created widget {second}")
    call_command("pending_notifications")

    _say("\n== 3. deploy: migration 0005 adds priority NOT NULL, 0006 back-fills every widget")
    _say("      (RunPython on the live table + BackfillHistory on the history table)")
    call_command("migrate", "evolving", verbosity=0)

    _say("\n== 4. the listener starts: python testproject/manage.py listen --recover")
    listener = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "testproject" / "manage.py"),
            "listen",
            "--recover",
            "--loglevel",
            "warning",
        ],
        env={**os.environ, "DATABASE_URL": url},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ours = ReceivedEvent.objects.filter(listener="on_widget_changed").count()
            theirs = ReceivedEvent.objects.filter(listener="on_widget_json").count()
            if ours >= 3 and theirs >= 3:
                break
            time.sleep(0.2)
        else:
            _say("!! the listener did not receive everything within 60 s")
            return 1
    finally:
        listener.send_signal(signal.SIGTERM)
        code = listener.wait(30)

    _say("\n== 5. what the listeners received")
    _say("   pgpubsub_simplehistory HistoryTriggerChannel (pointer into history):")
    for e in ReceivedEvent.objects.filter(listener="on_widget_changed"):
        _say(
            f"     {e.history_type} widget {e.object_id}: name={e.new['name']!r} "
            f"priority={e.new['priority']}  schema_changed={e.extra['schema_changed']} "
            f"(changed at {e.extra['migration_at_change']}, now {e.extra['migration_now']})"
        )
    _say("   django-pgpubsub TriggerChannel (row serialized as JSON at change time):")
    for e in ReceivedEvent.objects.filter(listener="on_widget_json"):
        _say(
            f"     {e.history_type} widget {e.object_id}: name={e.new['name']!r} "
            f"priority={e.new['priority']}"
        )
    _say(
        "\n   The JSON channel delivers priority=0 for the changes made before the migration,\n"
        "   breaking the invariant the data migration established (and it also notified the\n"
        "   migration's own UPDATEs). The history channel delivers the back-filled priority\n"
        "   and tells the listener that the schema changed since the change was made."
    )
    _say(f"\nlistener exited with status {code}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
