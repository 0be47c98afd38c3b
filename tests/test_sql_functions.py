"""The SQL functions in ``pgpubsub_simplehistory/sql/*_vN.sql`` are part of every application's
database: the history triggers migrated into applications call ``enqueue_v1``, and a database
keeps the body that the migration which loaded it read. So a function file must not change
silently. Changing one needs, in the same commit:

* a migration of this app that loads it again (``RunSQL(sql_function(NAME))``: ``CREATE OR
  REPLACE``), so that databases migrated before get the new body; or, when its signature
  changes, a new version ``NAME_v2.sql`` (triggers already migrated keep calling ``_v1``);
* the new hash below, with the migration's name beside it.

Until the first release (nothing is on PyPI), pre-release databases are rebuilt instead
(CHANGELOG: ``migrate pgpubsub_simplehistory zero``)."""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest
from django.db import connection

#: file -> (sha256 of its text, the latest migration that loads it)
PINNED = {
    "claim_v1.sql": (
        "63f60b4ad0dd1a9fc1d976f918a8061e27290e8f335f8b6f1dd39e3188b92dd9",
        "0006_claim_v1_no_join",
    ),
    "enqueue_v1.sql": (
        "e2c732fb243a8062363bf5a171e146aece4200ff212dddb9d430ca69e969970d",
        "0004_enqueue_v1_no_listener",
    ),
}


def _files() -> dict[str, str]:
    folder = resources.files("pgpubsub_simplehistory").joinpath("sql")
    return {
        entry.name: entry.read_text("utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".sql") and entry.name != "queries.sql"
    }


def test_every_sql_function_file_is_pinned_with_the_migration_that_loads_it():
    files = _files()
    assert set(files) == set(PINNED), "a new function file: pin it (see this module's docstring)"
    for name, text in files.items():
        digest, migration = PINNED[name]
        assert hashlib.sha256(text.encode()).hexdigest() == digest, (
            f"sql/{name} changed: add a migration that loads it again (or a new _vN for a new "
            f"signature), then pin its new hash here (see this module's docstring)"
        )
        source = (
            resources.files("pgpubsub_simplehistory")
            .joinpath(f"migrations/{migration}.py")
            .read_text("utf-8")
        )
        assert f'sql_function("{name.removesuffix(".sql")}")' in source, (name, migration)


@pytest.mark.django_db
def test_the_migrated_database_runs_the_pinned_bodies():
    """What the migrations installed is what the files say (not an older body)."""
    for name, text in _files().items():
        function = "pgpubsub_simplehistory_" + name.removesuffix(".sql")
        with connection.cursor() as cursor:
            cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = %s", [function])
            [(body,)] = cursor.fetchall()
        assert body.strip() in text, function
