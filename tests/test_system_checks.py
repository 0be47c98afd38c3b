"""Every documented system check fires in a real project (a settings module and an app written
to a temporary directory, ``python -m django`` in a subprocess), with a message naming the model
and a hint that can be followed, and no ``manage.py`` command crashes for a misconfiguration a
check covers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from django.db import connection

pytestmark = pytest.mark.subprocess

MODELS = """
from django.contrib.auth.models import User
from django.db import models
from simple_history.models import HistoricalRecords as PlainHistoricalRecords

from pgpubsub_simplehistory import HistoricalRecords


class Order(models.Model):
    status = models.CharField(max_length=20, default="new")
    history = HistoricalRecords()


class NoHistory(models.Model):
    name = models.CharField(max_length=20)


class OrderProxy(Order):
    class Meta:
        proxy = True


class PlainTracked(models.Model):
    name = models.CharField(max_length=20)
    history = PlainHistoricalRecords()
"""

CHANNEL = """
from dataclasses import dataclass

import pgpubsub_simplehistory as psh

from .models import {model}


@dataclass
class {model}Channel(psh.HistoryTriggerChannel):
    model = {model}
    lock_notifications = True
    history_types = "{types}"


@psh.post_save_listener({model}Channel)
def on_save(old, new):
    print("saved", new.pk, flush=True)
"""

APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "pgpubsub_simplehistory",
    "pgpubsub",
    "pgtrigger",
    "simple_history",
    "mini",
]


class Project:
    """A project with one app, ``mini``, in ``root``."""

    def __init__(self, root: Path, database: dict[str, str]) -> None:
        self.root = root
        self.database = database
        self.write("mini/__init__.py", "")
        self.write("mini/models.py", MODELS)
        self.write(
            "mini/apps.py",
            """
            from django.apps import AppConfig


            class MiniConfig(AppConfig):
                name = "mini"

                def ready(self):
                    from . import channels  # noqa: F401
            """,
        )
        self.channel("Order")
        self.settings(APPS)

    def write(self, path: str, text: str) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())

    def channel(self, model: str, types: str = "+~-", extra: str = "") -> None:
        self.write("mini/channels.py", CHANNEL.format(model=model, types=types) + extra)

    def settings(self, apps: list[str]) -> None:
        database = {"ENGINE": "django.db.backends.postgresql", **self.database}
        self.write(
            "settings.py",
            f"""
            SECRET_KEY = "not secret"
            USE_TZ = True
            DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
            INSTALLED_APPS = {apps!r}
            DATABASES = {{"default": {database!r}}}
            """,
        )

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(DJANGO_SETTINGS_MODULE="settings", PYTHONPATH=str(self.root))
        return subprocess.run(
            [sys.executable, "-m", "django", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )


#: A server where nothing listens: these checks must not need the database.
NO_DATABASE = {"NAME": "nowhere", "HOST": "127.0.0.1", "PORT": "9", "USER": "postgres"}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path, NO_DATABASE)


#: Commands that must stop on a check error with Django's report, never a traceback.
CHECKED_COMMANDS = [
    ["check"],
    ["listen"],
    ["replay_history", "--model", "mini.Order", "--all"],
    ["parked", "list"],
    ["listener_health"],
    ["pending_notifications"],
    ["makemigrations", "--check", "--dry-run"],
]


def assert_check_error(project: Project, check_id: str, *texts: str) -> str:
    """Every checked command stops with ``check_id`` (and each of ``texts``) and no traceback;
    commands without checks still run."""
    report = ""
    for args in CHECKED_COMMANDS:
        result = project.manage(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert "SystemCheckError" in result.stderr and f"pgpubsub_simplehistory.{check_id}" in (
            result.stderr
        ), (args, result.stderr)
        report = report or result.stderr
    for text in texts:
        assert text in report, report
    for args in (["help"], ["shell", "-c", "print('shell ran')"]):
        result = project.manage(*args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr)
    return report


def test_a_correct_project_has_no_issues(project):
    result = project.manage("check")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_E001_channel_on_a_model_without_history(project):
    project.channel("NoHistory")
    assert_check_error(
        project,
        "E001",
        "mini.NoHistory has no django-simple-history HistoricalRecords",
        "HINT: Add `history = HistoricalRecords()` (from pgpubsub_simplehistory) to NoHistory",
        "pgpubsub_simplehistory.register(NoHistory, app=...)",
    )


def test_E001_channel_whose_model_is_not_a_model_class(project):
    project.write(
        "mini/channels.py",
        """
        from dataclasses import dataclass

        from pgpubsub_simplehistory import HistoryTriggerChannel, post_save_listener


        @dataclass
        class OrderChannel(HistoryTriggerChannel):
            model = "mini.Order"


        @post_save_listener(OrderChannel)
        def on_save(old, new):
            pass
        """,
    )
    assert_check_error(
        project,
        "E001",
        "mini.channels.OrderChannel.model must be a Django model class, not 'mini.Order'",
        "HINT: Set OrderChannel.model to the model class itself (import it), not 'mini.Order'.",
    )


def test_E003_channel_on_a_proxy_model(project):
    project.channel("OrderProxy")
    report = assert_check_error(
        project, "E003", "publishes proxy model mini.OrderProxy", "HINT: Use the concrete model"
    )
    assert "mini.Order." in report
    assert "has no django-simple-history" not in report  # not the E001 advice


@pytest.mark.parametrize(
    "missing", [["pgpubsub"], ["pgtrigger"], ["pgpubsub", "pgtrigger"]], ids="+".join
)
def test_E004_pgpubsub_or_pgtrigger_missing_from_installed_apps(project, missing):
    """django-pgpubsub's own model declares ``Meta.triggers``, which Django refuses unless
    pgtrigger's app module ran: without 'pgtrigger' every command crashed while loading models."""
    project.settings([app for app in APPS if app not in missing])
    report = assert_check_error(project, "E004")
    for app in missing:
        assert f"'{app}' is not in INSTALLED_APPS" in report
        assert f"HINT: Add '{app}' to INSTALLED_APPS" in report
    assert report.count("E004") == len(missing)


def test_E002_pgpubsub_before_this_app(project):
    project.settings(["pgpubsub", *[app for app in APPS if app != "pgpubsub"]])
    assert_check_error(project, "E002", "Move 'pgpubsub_simplehistory' above 'pgpubsub'")


def test_E005_django_pgpubsub_decorator_on_a_history_channel_without_our_listeners(project):
    """The migration mistake docs/comparison.md warns about: django-pgpubsub's decorator puts a
    trigger on the model's table. The channel has no listener of this package."""
    project.write(
        "mini/channels.py",
        """
        from dataclasses import dataclass

        import pgpubsub

        from pgpubsub_simplehistory import HistoryTriggerChannel

        from .models import Order


        @dataclass
        class OrderChannel(HistoryTriggerChannel):
            model = Order


        @pgpubsub.post_save_listener(OrderChannel)
        def on_save(old, new):
            pass
        """,
    )
    assert_check_error(
        project,
        "E005",
        "listener mini.channels.on_save is subscribed to history channel "
        "mini.channels.OrderChannel with django-pgpubsub's decorator",
        "HINT: Use pgpubsub_simplehistory.post_save_listener",
    )
    result = project.manage("makemigrations", "mini")
    assert result.returncode == 1 and not (project.root / "mini" / "migrations").exists()


def test_W001_simple_history_register_hint_can_be_followed(project):
    """A model you do not own, registered with simple-history's ``register``: the hint points
    at ``pgpubsub_simplehistory.register``, and following it silences the warning."""
    register = """
        from django.contrib.auth.models import User
        import simple_history

        simple_history.register(User, app="mini")
        """
    project.write("mini/models.py", MODELS + textwrap.dedent(register))
    project.channel("User")  # `from .models import User`: auth's User
    result = project.manage("check")
    assert result.returncode == 0, result.stderr  # a warning does not stop a command
    report = result.stderr
    assert "(pgpubsub_simplehistory.W001) saves of auth.User are not atomic" in report
    assert "simple_history.register(User, ...) (a model you do not own), call " in report
    assert "pgpubsub_simplehistory.register(User, ...) instead" in report

    following = register.replace("import simple_history", "import pgpubsub_simplehistory")
    following = following.replace("simple_history.register", "pgpubsub_simplehistory.register")
    project.write("mini/models.py", MODELS + textwrap.dedent(following))
    result = project.manage("check")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout, result.stderr


def test_W001_plain_historical_records_field(project):
    project.channel("PlainTracked")
    result = project.manage("check")
    assert "(pgpubsub_simplehistory.W001) saves of mini.PlainTracked are not atomic" in (
        result.stderr
    )
    assert "import HistoricalRecords from pgpubsub_simplehistory" in result.stderr


# W002 needs a database of its own.


@pytest.fixture
def migrated_project(tmp_path: Path, transactional_db: None):
    name = f"psh_checks_{uuid.uuid4().hex[:10]}"
    raw = connection.get_new_connection(connection.get_connection_params())
    raw.autocommit = True
    with raw.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    s = connection.settings_dict
    database = {"NAME": name, "USER": s["USER"], "PASSWORD": s["PASSWORD"], "HOST": s["HOST"]}
    database["PORT"] = str(s["PORT"])
    yield Project(tmp_path, database)
    with raw.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    raw.close()


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_W002_not_printed_by_the_migrate_that_installs_the_trigger(migrated_project):
    project = migrated_project
    ok(project.manage("makemigrations", "mini"))
    # before the first migrate the trigger is missing, but the migration about to run has it
    assert "W002" not in ok(project.manage("check", "--database", "default"))
    output = ok(project.manage("migrate"))
    assert "W002" not in output and "Applying mini.0001_initial... OK" in output
    assert "W002" not in ok(project.manage("check", "--database", "default"))

    # the channel changes and no migration says so: the installed trigger is outdated
    project.channel("Order", types="+~")
    output = ok(project.manage("check", "--database", "default"))
    assert "(pgpubsub_simplehistory.W002) the trigger of mini.channels.OrderChannel" in output
    assert "is outdated in database 'default'" in output
    assert "HINT: Run makemigrations, then migrate" in output
    assert "W002" in ok(project.manage("migrate"))  # no migration installs it: still said

    ok(project.manage("makemigrations", "mini"))
    assert "W002" not in ok(project.manage("check", "--database", "default"))
    assert "W002" not in ok(project.manage("migrate"))
    assert "W002" not in ok(project.manage("check", "--database", "default"))


def test_W002_printed_by_migrate_when_no_migration_installs_the_trigger(migrated_project):
    project = migrated_project
    output = ok(project.manage("migrate"))  # makemigrations forgotten
    assert "(pgpubsub_simplehistory.W002) the trigger of mini.channels.OrderChannel" in output
    assert "is uninstalled in database 'default'" in output
