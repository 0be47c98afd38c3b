"""docs/tutorial.md followed to the letter: a fresh project, its files, commands and output."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import connection

from .conftest import wait_for

pytestmark = pytest.mark.subprocess

PAGE = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
BLOCK = re.compile(r"```(python|console|text)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [code for k, code in BLOCK.findall(PAGE.read_text()) if k == kind]


def clean_env() -> dict[str, str]:
    """The environment of a fresh shell: not the test run's settings."""
    drop = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def database(transactional_db: None) -> object:
    """A database of its own for the tutorial project, dropped afterwards."""
    name = f"psh_tutorial_{uuid.uuid4().hex[:10]}"
    raw = connection.get_new_connection(connection.get_connection_params())
    raw.autocommit = True
    with raw.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield name
    with raw.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    raw.close()


def test_the_tutorial_works_as_written(tmp_path: Path, database: str) -> None:
    commands = []
    for block in blocks("console"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if line.startswith("python manage.py "):
                commands.append(words[1:])
            elif line.startswith("django-admin "):
                commands.append(["-m", "django", *words[1:]])
    assert commands[0] == ["-m", "django", "startproject", "mysite", "."]
    assert commands[1] == ["manage.py", "startapp", "shop"]
    for command in commands[:2]:
        run(tmp_path, *command)
    commands = commands[2:]

    for code in blocks("python"):
        header, _, body = code.partition("\n")
        target = header.removeprefix("# ").split()[0]
        path = tmp_path / target
        if header.endswith("(append)"):
            path.write_text(path.read_text() + "\n" + body)
        else:
            path.write_text(body)
    s = connection.settings_dict
    with (tmp_path / "mysite" / "settings.py").open("a") as settings:
        # The tutorial's DATABASES, pointed at the test server and the tutorial's own database.
        settings.write(
            f"\nDATABASES['default'].update(NAME={database!r}, USER={s['USER']!r}, "
            f"PASSWORD={s['PASSWORD']!r}, HOST={s['HOST']!r}, PORT={str(s['PORT'])!r})\n"
        )

    listen = [c for c in commands if c[1] == "listen"]
    assert listen == [["manage.py", "listen"]]
    setup = commands[: commands.index(listen[0])]
    after = commands[commands.index(listen[0]) + 1 :]
    assert [c[1] for c in setup] == ["makemigrations", "migrate", "check"]
    assert [c[1] for c in after] == ["shell"]

    for command in setup:
        run(tmp_path, *command)
    out, err = tmp_path / "listen.out", tmp_path / "listen.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        listener = subprocess.Popen(
            [sys.executable, *listen[0]],
            cwd=tmp_path,
            stdout=stdout,
            stderr=stderr,
            text=True,
            env=clean_env(),
        )
    try:
        wait_for(lambda: "worker ready" in err.read_text(), timeout=30)
        for command in after:
            run(tmp_path, *command)
        expected = [
            re.sub(r"\d+", r"\\d+", re.escape(line)) for line in blocks("text")[0].splitlines()
        ]
        wait_for(lambda: len(out.read_text().splitlines()) >= len(expected), timeout=30)
        printed = out.read_text().splitlines()
        assert len(printed) == len(expected)
        for line, pattern in zip(printed, expected, strict=True):
            assert re.fullmatch(pattern, line), (line, pattern)
    finally:
        listener.send_signal(signal.SIGTERM)
        assert listener.wait(20) == 0, err.read_text()
