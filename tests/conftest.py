"""Fixtures on a real Postgres: ``DATABASE_URL`` or the embedded server (testproject/pgembed.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection

from pgpubsub_simplehistory import Worker

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "testproject" / "manage.py"


class DrainingWorker(Worker):
    def drain(self, quiet: float = 0.3, timeout: float = 10.0) -> int:
        """Process notifications until none arrives for ``quiet`` seconds."""
        handled = 0
        deadline = time.monotonic() + timeout
        last_activity = time.monotonic()
        while time.monotonic() < deadline:
            n = self.process_available(timeout=min(quiet, 0.05))
            handled += n
            if n:
                last_activity = time.monotonic()
            elif time.monotonic() - last_activity >= quiet:
                return handled
        raise AssertionError(f"notifications kept arriving for {timeout}s")


@pytest.fixture
def isolated_registry() -> Iterator[None]:
    """Channels and subscriptions declared by the test are forgotten afterwards (and their
    triggers unregistered from django-pgtrigger)."""
    from pgpubsub_simplehistory import _pgtrigger, registry

    with registry.isolated(), _pgtrigger.isolated():
        yield


@pytest.fixture
def worker(transactional_db: None) -> Iterator[DrainingWorker]:
    lst = DrainingWorker(sweep_interval=3600)
    lst.start()
    yield lst
    lst.close()


@pytest.fixture
def notify_capture(
    transactional_db: None,
) -> Iterator[Callable[[type[Any]], Callable[[], list[str]]]]:
    """``capture = notify_capture(Channel)``; later ``capture()`` returns the NOTIFY payloads."""
    from collections import deque

    from pgpubsub_simplehistory.listening import Notify, _source_for

    sources = []

    def start(channel: type[Any]) -> Callable[[], list[str]]:
        raw = connection.get_new_connection(connection.get_connection_params())
        raw.autocommit = True
        cursor = raw.cursor()
        cursor.execute(f'LISTEN "{channel.listen_safe_name()}"')
        cursor.close()
        queue: deque[Notify] = deque()
        source = _source_for(raw, queue)
        sources.append(source)

        def collect() -> list[str]:
            source.wait(0.5)
            return [n.payload for n in queue]

        return collect

    yield start
    for source in sources:
        source.close()


def subprocess_database_url() -> str:
    """A URL for the test database, for subprocesses."""
    s = connection.settings_dict
    host = s["HOST"] or "localhost"
    user = quote(s["USER"] or "postgres")
    password = f":{quote(s['PASSWORD'])}" if s["PASSWORD"] else ""
    if host.startswith("/"):
        return f"postgresql://{user}{password}@/{s['NAME']}?host={quote(host)}"
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgresql://{user}{password}@{host}{port}/{s['NAME']}"


class Proc(subprocess.Popen[str]):
    """A subprocess whose output goes to files (a full pipe would block a chatty listener)."""

    out_path: Path
    err_path: Path

    def stdout_text(self) -> str:
        return self.out_path.read_text()

    def stderr_text(self) -> str:
        return self.err_path.read_text()


@pytest.fixture
def manage(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start ``manage.py <args>`` against the test database; killed at teardown."""
    started: list[Proc] = []

    def run(*args: str, env: dict[str, str] | None = None, url: str | None = None) -> Proc:
        database_url = url or subprocess_database_url()
        full_env = {**os.environ, "DATABASE_URL": database_url, **(env or {})}
        n = len(started)
        out_path, err_path = tmp_path / f"proc{n}.out", tmp_path / f"proc{n}.err"
        with out_path.open("w") as out, err_path.open("w") as err:
            proc = Proc(
                [sys.executable, str(MANAGE), *args],
                env=full_env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        proc.out_path, proc.err_path = out_path, err_path
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
