"""Bootstrap entry point: ``python -m testproject test|demo|manage ...`` on a fresh clone.

Needs only Python >= 3.10: it creates ``.venv`` (or ``$PSH_VENV``), installs the project with its
test dependencies there (again whenever pyproject.toml changes), and runs the command inside it.
Postgres comes from ``$DATABASE_URL`` or is started by ``testproject/pgembed.py``.

    python -m testproject test [pytest args...]   # the test suite
    python -m testproject demo                    # the migration-survival demo
    python -m testproject manage <command> ...    # manage.py of the example project
    python -m testproject pg [--database NAME]    # a throwaway PostgreSQL for your own project
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("PSH_VENV", ROOT / ".venv"))
USAGE = "usage: python -m testproject {test,demo,manage,pg} [args...]"
COMMANDS = ("test", "demo", "manage", "pg")


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv() -> Path:
    extras = os.environ.get("PSH_EXTRAS", "test")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / ".psh-installed"
    if not _python().exists():
        print(f"creating virtualenv {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing pgpubsub-simplehistory[{extras}] into {VENV}", file=sys.stderr)
        subprocess.run(
            [
                str(_python()),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-e",
                f"{ROOT}[{extras}]",
            ],
            check=True,
        )
        stamp.write_text(wanted)
    return _python()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    python = str(ensure_venv())
    os.chdir(ROOT)
    if command == "test":
        args = [python, "-m", "pytest", *rest]
    elif command == "demo":
        args = [python, "-m", "testproject.demo", *rest]
    elif command == "pg":
        args = [python, "-m", "testproject.pgembed", *rest]
    else:
        args = [python, str(ROOT / "testproject" / "manage.py"), *rest]
    return subprocess.call(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
