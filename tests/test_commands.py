"""The operations commands (replay_history, parked, listener_health, pending_notifications):
bad input is one line on stderr and exit status 2, a selection that matches nothing says so, and
every option has a help text. In-process (call_command) and in real ``manage.py`` subprocesses,
where what Django prints is what an operator sees."""

from __future__ import annotations

import socket
import uuid
from io import StringIO
from urllib.parse import urlparse, urlunparse

import pytest
from django.core.management import CommandError, call_command, load_command_class
from django.db import connection

from pgpubsub_simplehistory.models import Notification
from testproject.shop.factories import OrderFactory
from testproject.shop.models import ReceivedEvent

from .conftest import subprocess_database_url

pytestmark = pytest.mark.django_db(transaction=True)

COMMANDS = ["replay_history", "parked", "listener_health", "pending_notifications"]

#: Arguments that make each command run (and read the database) when nothing is wrong.
RUNS = {
    "replay_history": ["--model", "shop.Order", "--all", "--dry-run"],
    "parked": ["list"],
    "listener_health": [],
    "pending_notifications": [],
}


@pytest.fixture
def parked() -> Notification:
    """One parked notification of shop.Order (and no listener run for it)."""
    order = OrderFactory(status="explode")
    notification = Notification.objects.get(model="shop.Order", object_id=str(order.pk))
    Notification.objects.filter(pk=notification.pk).update(
        state="parked", attempts=5, last_error="RuntimeError: refuses"
    )
    return Notification.objects.get(pk=notification.pk)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def fails(*args: str) -> CommandError:
    with pytest.raises(CommandError) as exc:
        call_command(*args, stdout=StringIO(), stderr=StringIO())
    return exc.value


def database_args(command: str, alias: str) -> list[str]:
    """``--database`` goes after the action for ``parked``."""
    return [command, *RUNS[command], "--database", alias]


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_database_alias_is_exit_2_naming_the_configured_ones(command):
    error = fails(*database_args(command, "nope"))
    assert error.returncode == 2
    assert str(error) == "unknown --database 'nope': settings.DATABASES has 'default', 'other'"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_and_argument_has_a_help_text(command):
    import argparse

    parser = load_command_class("pgpubsub_simplehistory", command).create_parser("m", command)
    parsers = [parser] + [
        sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for sub in action.choices.values()
    ]
    missing = [
        f"{p.prog} {a.option_strings or a.dest}"
        for p in parsers
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert missing == []
    # the texts the issue found lacking say what the option is for
    texts = {o: a.help for p in parsers for a in p._actions for o in a.option_strings or [a.dest]}
    if "--no-progress" in texts:
        assert "Never show the progress bar" in texts["--no-progress"]
    if command == "parked":
        assert "'parked list' shows" in texts["--id"]
    if command == "replay_history":
        assert "history records" in texts["history_ids"]
    assert "settings.DATABASES" in texts["--database"]


def test_parked_unknown_model_is_exit_2_and_changes_nothing(parked):
    error = fails("parked", "retry", "--model", "shop.Nope")
    assert error.returncode == 2
    assert "unknown model 'shop.Nope'" in str(error)
    assert Notification.objects.get(pk=parked.pk).state == "parked"


def test_parked_model_label_is_matched_whatever_its_case(parked):
    assert "1 parked notification(s) made pending" in run(
        "parked", "retry", "--model", "shop.order"
    )
    assert Notification.objects.get(pk=parked.pk).state == "pending"


@pytest.mark.parametrize("action", ["list", "retry", "purge"])
def test_parked_unknown_id_is_exit_2_like_replay_history(parked, action):
    noinput = ["--noinput"] if action == "purge" else []
    error = fails("parked", action, "--id", str(parked.pk), "999999", *noinput)
    assert error.returncode == 2
    assert "no parked notification has id 999999" in str(error)
    assert Notification.objects.get(pk=parked.pk).state == "parked"  # nothing done


def test_parked_id_of_a_pending_notification_is_not_a_parked_one():
    order = OrderFactory()
    pending = Notification.objects.get(object_id=str(order.pk))
    error = fails("parked", "retry", "--id", str(pending.pk))
    assert error.returncode == 2 and f"no parked notification has id {pending.pk}" in str(error)


@pytest.mark.parametrize("action", ["retry", "purge"])
def test_parked_all_together_with_a_selection_is_exit_2(parked, action):
    noinput = ["--noinput"] if action == "purge" else []
    error = fails("parked", action, "--all", "--model", "shop.Order", *noinput)
    assert error.returncode == 2
    assert str(error) == (
        f"{action}: --all cannot be combined with --model (it selects every parked notification)"
    )
    assert Notification.objects.filter(pk=parked.pk, state="parked").exists()


def test_parked_selection_that_matches_nothing_says_so_and_exits_0(parked):
    out = run("parked", "retry", "--model", "shop.Customer")
    assert out == "nothing matched: no parked notification with --model shop.Customer\n"
    out = run("parked", "purge", "--model", "shop.Customer", "--noinput")
    assert out == "nothing matched: no parked notification with --model shop.Customer\n"
    out = run("parked", "list", "--channel", "testproject.shop.channels.CustomerChannel")
    assert out.startswith("nothing matched: no parked notification with --channel ")
    assert Notification.objects.get(pk=parked.pk).state == "parked"
    _header, row = run("parked", "list", "--model", "shop.Order").splitlines()
    assert row.split()[:2] == [str(parked.pk), "shop.Order"] and "RuntimeError: refuses" in row


def test_parked_with_nothing_parked(transactional_db):
    assert run("parked", "list") == "No parked notifications.\n"
    assert run("parked", "retry", "--all") == "No parked notifications.\n"


def test_parked_purge_without_a_terminal_asks_for_noinput(parked):
    error = fails("parked", "purge", "--all")  # pytest's stdin is not a terminal
    assert error.returncode == 2
    assert str(error) == (
        "purge: no terminal to confirm on; pass --noinput to delete without asking"
    )
    assert Notification.objects.filter(pk=parked.pk).exists()


def test_replay_history_selection_that_matches_nothing_says_so_and_exits_0(transactional_db):
    order = OrderFactory()
    Notification.objects.all().delete()
    out = run("replay_history", "--model", "shop.Order", "--object", "999999")
    assert out == "nothing matched: no history record of shop.Order with --object 999999\n"
    out = run(
        "replay_history", "--model", "shop.Order", "--object", str(order.pk), "--type", "-",
        "--since", "2000-01-01",
    )  # fmt: skip
    assert out == (
        "nothing matched: no history record of shop.Order with --since 2000-01-01 "
        f"--object {order.pk} --type -\n"
    )
    assert not ReceivedEvent.objects.exists()


@pytest.mark.parametrize(
    ("selection", "named"),
    [
        (["1"], "history ids"),
        (["--object", "1"], "--object"),
        (["--since", "2000-01-01", "--type", "+"], "--since, --type"),
    ],
)
def test_replay_history_all_together_with_a_selection_is_exit_2(selection, named):
    error = fails("replay_history", "--model", "shop.Order", "--all", *selection)
    assert error.returncode == 2
    assert str(error) == (
        f"--all cannot be combined with {named} (it selects every record of shop.Order)"
    )


# Real subprocesses: what an operator sees.


def closed_port_url() -> str:
    """A database URL on a port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/nowhere"


def assert_one_line(proc, status: int, *expected: str) -> str:
    assert proc.wait(60) == status, proc.stderr_text()
    lines = proc.stderr_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("CommandError: ")
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.subprocess
def test_unknown_and_unreachable_database_in_real_subprocesses(manage):
    unknown = [manage(*database_args(c, "nope")) for c in COMMANDS]
    down_url = closed_port_url()
    down = [manage(c, *RUNS[c], url=down_url) for c in COMMANDS]
    for proc in unknown:
        assert_one_line(proc, 2, "unknown --database 'nope'")
    port = urlparse(down_url).port
    for proc in down:
        line = assert_one_line(proc, 2, f"database 'default' (nowhere on 127.0.0.1:{port})")
        assert "is unreachable: " in line and "refused" in line.lower()


@pytest.fixture
def empty_database(transactional_db: None):
    """A database with no tables, on the test server (dropped afterwards)."""
    name = f"psh_empty_{uuid.uuid4().hex[:10]}"
    raw = connection.get_new_connection(connection.get_connection_params())
    raw.autocommit = True
    with raw.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield urlunparse(urlparse(subprocess_database_url())._replace(path=f"/{name}"))
    with raw.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    raw.close()


@pytest.mark.subprocess
def test_a_database_error_after_connecting_is_one_line_and_exit_1(manage, empty_database):
    """An unmigrated database: the queue table is missing."""
    proc = manage("pending_notifications", url=empty_database)
    assert_one_line(proc, 1, "database 'default' (psh_empty_", "failed: ", "does not exist")


@pytest.mark.subprocess
def test_parked_bad_input_in_real_subprocesses(manage, parked):
    procs = [
        (manage("parked", "retry", "--model", "shop.Nope"), "unknown model 'shop.Nope'"),
        (manage("parked", "retry", "--id", "999999"), "no parked notification has id 999999"),
        (manage("parked", "purge", "--all"), "pass --noinput"),  # stdin is /dev/null
        (manage("parked", "retry", "--all", "--id", str(parked.pk)), "--all cannot be combined"),
    ]
    for proc, message in procs:
        stderr = assert_one_line(proc, 2, message)
        assert "EOFError" not in stderr
    assert Notification.objects.get(pk=parked.pk).state == "parked"

    proc = manage("parked", "retry", "--model", "shop.Customer")
    assert proc.wait(60) == 0
    assert "nothing matched" in proc.stdout_text() and proc.stderr_text() == ""


@pytest.mark.subprocess
def test_replay_history_nothing_matched_in_a_real_subprocess(manage):
    OrderFactory()
    proc = manage("replay_history", "--model", "shop.Order", "--object", "999999")
    assert proc.wait(60) == 0
    assert proc.stdout_text() == (
        "nothing matched: no history record of shop.Order with --object 999999\n"
    )
    proc = manage("replay_history", "1", "--model", "shop.Order", "--all")
    assert_one_line(proc, 2, "--all cannot be combined with history ids")


@pytest.mark.parametrize("command", COMMANDS)
def test_version_is_this_librarys(command):
    from importlib import metadata

    cmd = load_command_class("pgpubsub_simplehistory", command)
    expected = f"pgpubsub-simplehistory {metadata.version('pgpubsub-simplehistory')} (Django "
    assert cmd.get_version().startswith(expected)
