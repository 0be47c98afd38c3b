"""``.ci/release.py`` (``nox -s release``): the version bump, the changelog, the build, and the
refusal to upload anything that is not committed. Run on copies of the repository's files."""

from __future__ import annotations

import datetime
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.driver_independent

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("release", ROOT / ".ci" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


release = _load()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """pyproject.toml and CHANGELOG.md as they are, in a git repository of their own."""
    for name in ("pyproject.toml", "CHANGELOG.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "unreleased")
    return tmp_path


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_bump_sets_the_version_and_dates_the_unreleased_changes(project):
    unreleased = (project / "CHANGELOG.md").read_text().split("## [Unreleased]", 1)[1]
    changed = release.bump("0.1.0", project, today=datetime.date(2027, 1, 2))
    assert changed == ["pyproject.toml", "CHANGELOG.md"]
    assert release.current_version(project) == "0.1.0"
    assert 'version = "0.1.0"' in (project / "pyproject.toml").read_text()
    changelog = (project / "CHANGELOG.md").read_text()
    assert "## [Unreleased]\n\n## [0.1.0] - 2027-01-02" + unreleased in changelog
    assert release.released("0.1.0", project)
    assert release.bump("0.1.0", project) == []  # again: nothing to do


@pytest.mark.parametrize("version", ["v0.1.0", "0.1", "0.1.0.dev0", "latest"])
def test_bump_refuses_what_is_not_a_release_version(project, version):
    with pytest.raises(release.ReleaseError, match="is not a release version"):
        release.bump(version, project)
    assert git(project, "status", "--porcelain") == ""


def test_bump_refuses_an_empty_unreleased_section(project):
    release.bump("0.1.0", project)
    with pytest.raises(release.ReleaseError, match="section is empty"):
        release.bump("0.1.1", project)


def test_upload_refuses_what_is_not_bumped_and_committed(project, capsys):
    # not bumped: refused before building anything (this copy could not even be built)
    assert release.main(["0.1.0", "--upload"], root=project) == 2
    assert "refusing to upload" in capsys.readouterr().err
    assert git(project, "status", "--porcelain") == ""  # and nothing was changed
    release.bump("0.1.0", project)
    assert release.main(["0.1.0", "--upload"], root=project) == 2  # bumped, not committed
    assert not (project / "dist").exists()


@pytest.mark.subprocess
def test_release_without_upload_builds_and_checks_the_distributions(tmp_path, capsys):
    """The whole command, on a copy of the repository's tracked files (needs build and twine,
    which the test extras install)."""
    import build  # noqa: F401  (a missing one fails here, by name)
    import twine  # noqa: F401

    before = (ROOT / "pyproject.toml").read_text()
    files = git(ROOT, "ls-files").split()
    for name in files:
        if (ROOT / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, tmp_path / name)
    assert release.main(["0.1.0"], root=tmp_path) == 0
    built = sorted(p.name for p in (tmp_path / "dist").iterdir())
    assert built == [
        "pgpubsub_simplehistory-0.1.0-py3-none-any.whl",
        "pgpubsub_simplehistory-0.1.0.tar.gz",
    ]
    out = capsys.readouterr().out
    assert "nothing uploaded" in out and "nox -s release -- 0.1.0 --upload" in out
    assert (ROOT / "pyproject.toml").read_text() == before  # the copy was released, not this
