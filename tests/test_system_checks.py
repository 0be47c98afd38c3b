"""Every documented system check fires in a real project (a settings module and an app written
to a temporary directory, ``python -m django`` in a subprocess), with a message naming the model
and a hint that can be followed, and no ``manage.py`` command crashes for a misconfiguration a
check covers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection

pytestmark = [pytest.mark.subprocess, pytest.mark.driver_independent]

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


ON_DELETE = """

@psh.post_delete_listener(OrderChannel)
def on_delete(old):
    print("deleted", old.pk, flush=True)
"""


def test_E008_listener_on_a_history_type_its_channel_does_not_publish(project):
    """The channel's trigger stores creates and updates only; a delete listener would never
    receive anything. The save listener beside it is fine and not reported."""
    project.channel("Order", types="+~", extra=ON_DELETE)
    report = assert_check_error(
        project,
        "E008",
        "listener mini.channels.on_delete subscribes to history type(s) - of "
        "mini.channels.OrderChannel, whose trigger publishes only + ~",
        "HINT: Add them to OrderChannel.history_types (then run makemigrations and migrate), "
        "or subscribe with another decorator.",
    )
    assert report.count("pgpubsub_simplehistory.E008") == 1  # not on_save: + ~ are published
    assert "on_save" not in report

    project.channel("Order", types="+~-", extra=ON_DELETE)  # following the hint
    assert "System check identified no issues" in ok(project.manage("check"))


def test_E008_listener_on_a_history_type_its_subscription_does_not_deliver(project):
    """The same mistake on a durable subscription. A subscription has no trigger of its own
    (its history_types change no migration): the hint names the class to edit, the
    subscription as declared, and following it is enough."""
    subscription = """
        import pgpubsub_simplehistory as psh

        from .models import Order


        class Feed(psh.HistorySubscription):
            model = Order
            name = "feed"
            history_types = "{types}"


        @psh.post_delete_listener(Feed)
        def gone(old):
            pass
        """
    project.write("mini/channels.py", subscription.format(types="+~"))
    report = assert_check_error(
        project,
        "E008",
        "listener mini.channels.gone subscribes to history type(s) - of durable subscription "
        "feed [mini.Order], which delivers only + ~",
    )
    assert "<class 'mini.channels.Feed'>" in report  # the class declared, not its stream
    assert "HINT: Add them to Feed.history_types" in report, report
    assert "makemigrations" not in report, report

    project.write("mini/channels.py", subscription.format(types="+~-"))  # following the hint
    assert "System check identified no issues" in ok(project.manage("check"))


UUID_MODEL = """

import uuid


class Ticket(models.Model):
    subject = models.CharField(max_length=20)
    history = HistoricalRecords(history_id_field=models.UUIDField(default=uuid.uuid4))
"""

TICKET_SUBSCRIPTION = """
import pgpubsub_simplehistory as psh

from .models import Ticket


class TicketFeed(psh.HistorySubscription):
    model = Ticket
    name = "ticket-feed"


@psh.post_save_listener(TicketFeed)
def feed(new):
    print("fed", new.pk, flush=True)
"""


def test_E009_durable_subscription_on_a_model_with_uuid_history_ids(project):
    """A subscription moves along history ids; UUIDs have no order. Both ways out of the hint
    work: the default AutoField history id, or a lockable channel instead of the
    subscription."""
    project.write("mini/models.py", MODELS + UUID_MODEL)
    project.write("mini/channels.py", TICKET_SUBSCRIPTION)
    report = assert_check_error(
        project,
        "E009",
        "ticket-feed follows mini.Ticket, whose history ids are not numbered (UUIDs): a durable "
        "subscription moves along history ids, which must come from a sequence",
        "HINT: Follow it with a lockable channel instead, or give its history the default "
        "AutoField history_id.",
    )
    assert report.count("pgpubsub_simplehistory.E009") == 1

    numbered = UUID_MODEL.replace(
        "HistoricalRecords(history_id_field=models.UUIDField(default=uuid.uuid4))",
        "HistoricalRecords()",
    )
    project.write("mini/models.py", MODELS + numbered)
    assert "System check identified no issues" in ok(project.manage("check"))

    project.write("mini/models.py", MODELS + UUID_MODEL)
    project.channel("Ticket")  # a lockable channel follows UUID history ids
    assert "System check identified no issues" in ok(project.manage("check"))


def start(project: Project, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """``python -m django <args>`` in the background; its output goes to the returned file."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DJANGO_SETTINGS_MODULE="settings", PYTHONPATH=str(project.root))
    output = project.root / f"{args[0]}.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "django", *args],
            cwd=project.root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    return proc, output


def test_adding_or_removing_a_listener_changes_no_migration_and_loses_no_change(
    migrated_project,
):
    """What a trigger stores depends on its channel alone: after the first migrate, adding a
    delete listener (to a channel that publishes deletes), removing the save listener, and
    removing every listener leave ``makemigrations --check`` and ``check`` clean, with the
    trigger installed as defined. A delete made before the delete listener existed was stored,
    and the worker started with the new listener delivers it."""
    project = migrated_project
    ok(project.manage("makemigrations", "mini"))
    ok(project.manage("migrate"))
    no_changes = ["makemigrations", "--check", "--dry-run"]

    def clean() -> None:
        assert "No changes detected" in ok(project.manage(*no_changes))
        for check in (["check"], ["check", "--database", "default"]):
            output = ok(project.manage(*check))
            assert "System check identified no issues" in output, output

    clean()
    made = ok(
        project.manage(
            "shell",
            "-c",
            "from mini.models import Order; o = Order.objects.create(); print('made', o.pk); "
            "o.delete()",
        )
    )
    pk = int(made.split("made ", 1)[1].split()[0])

    project.channel("Order", extra=ON_DELETE)  # a delete listener added
    clean()
    worker, output = start(project, "listen", "--sweep-interval", "0.5")
    try:
        deadline = time.monotonic() + 60
        while f"deleted {pk}" not in output.read_text() and time.monotonic() < deadline:
            assert worker.poll() is None, output.read_text()
            time.sleep(0.2)
        assert f"saved {pk}" in output.read_text() and f"deleted {pk}" in output.read_text(), (
            output.read_text()
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert "Traceback" not in output.read_text(), output.read_text()

    project.write(
        "mini/channels.py",
        CHANNEL.format(model="Order", types="+~-").split("@psh.post_save_listener")[0] + ON_DELETE,
    )  # the save listener removed
    clean()
    project.write(
        "mini/channels.py", CHANNEL.format(model="Order", types="+~-").split("@psh.")[0]
    )  # no listener at all
    clean()
