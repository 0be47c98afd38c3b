"""A release in one command: ``nox -s release -- VERSION [--upload]`` (docs/releasing.md).

1. sets ``version`` in pyproject.toml and turns CHANGELOG.md's ``## [Unreleased]`` section into
   ``## [VERSION] - DATE`` (a new empty ``## [Unreleased]`` above it);
2. builds the sdist and the wheel into ``dist/`` (emptied first), ``twine check --strict``s them
   and checks what the wheel holds (``.ci/check_dist.py``);
3. with ``--upload`` instead, and only once steps 1 and 2 are committed (a clean git tree whose
   version and changelog already say VERSION): builds again and ``twine upload``s (credentials
   from ``TWINE_USERNAME``/``TWINE_PASSWORD`` or ``~/.pypirc``; ``--repository testpypi`` to try).

Without ``--upload`` it is safe to repeat: running it again with the same version changes
nothing but ``dist/``.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Versions this project releases: 1.2.3, 1.2.3rc1, 1.2.3a1, 1.2.3b2, 1.2.3.post1.
VERSION = re.compile(r"\d+\.\d+\.\d+((a|b|rc)\d+|\.post\d+)?")
_PYPROJECT_VERSION = re.compile(r'^version = "([^"]+)"$', re.M)
UNRELEASED = "## [Unreleased]"


class ReleaseError(Exception):
    pass


def current_version(root: Path = ROOT) -> str:
    match = _PYPROJECT_VERSION.search((root / "pyproject.toml").read_text())
    if match is None:
        raise ReleaseError('pyproject.toml has no `version = "..."` line')
    return match.group(1)


def bump(version: str, root: Path = ROOT, today: datetime.date | None = None) -> list[str]:
    """Set the version and date the changelog; the files changed (none when already done)."""
    if not VERSION.fullmatch(version):
        raise ReleaseError(f"{version!r} is not a release version (like 0.1.0 or 0.1.0rc1)")
    day = (today or datetime.date.today()).isoformat()
    changed = []
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    if current_version(root) != version:
        pyproject.write_text(_PYPROJECT_VERSION.sub(f'version = "{version}"', text, count=1))
        changed.append("pyproject.toml")
    changelog = root / "CHANGELOG.md"
    text = changelog.read_text()
    if f"## [{version}]" not in text:
        if UNRELEASED not in text:
            raise ReleaseError(f"CHANGELOG.md has no `{UNRELEASED}` section to release")
        section = text.split(UNRELEASED, 1)[1].split("\n## ", 1)[0]
        if not section.strip():
            raise ReleaseError(
                f"CHANGELOG.md's `{UNRELEASED}` section is empty: nothing to release"
            )
        changelog.write_text(text.replace(UNRELEASED, f"{UNRELEASED}\n\n## [{version}] - {day}", 1))
        changed.append("CHANGELOG.md")
    return changed


def build(root: Path = ROOT) -> list[Path]:
    """Build into ``dist/``, ``twine check`` and check the wheel's contents; the files built."""
    dist = root / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(root)], check=True)
    subprocess.run([sys.executable, str(root / ".ci" / "check_dist.py"), str(dist)], check=True)
    return sorted(dist.iterdir())


def released(version: str, root: Path = ROOT) -> bool:
    """Whether :func:`bump` has nothing left to do for ``version``."""
    changelog = (root / "CHANGELOG.md").read_text()
    return current_version(root) == version and f"## [{version}]" in changelog


def git_is_clean(root: Path = ROOT) -> bool:
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
    )
    return status.stdout.strip() == ""


def main(argv: list[str], root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(prog="nox -s release --", description=__doc__.split("\n")[0])
    parser.add_argument("version", help="The version to release, e.g. 0.1.0.")
    parser.add_argument(
        "--upload", action="store_true", help="Upload dist/ with twine (nothing else does)."
    )
    parser.add_argument("--repository", default="pypi", help="twine's --repository (testpypi).")
    args = parser.parse_args(argv)
    try:
        if args.upload:
            if not released(args.version, root) or not git_is_clean(root):
                raise ReleaseError(
                    f"refusing to upload: run `nox -s release -- {args.version}` first, commit "
                    "(and tag) what it changed, then run this again with --upload"
                )
            built = build(root)
            subprocess.run(
                [sys.executable, "-m", "twine", "upload", "--repository", args.repository]
                + [str(p) for p in built],
                check=True,
            )
            print(f"uploaded {args.version} to {args.repository}")
            return 0
        changed = bump(args.version, root)
        built = build(root)
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 2
    print(f"built {', '.join(p.name for p in built)}; nothing uploaded. Next:")
    if changed:
        print(f"  review {' and '.join(changed)}, then git commit -am 'Release {args.version}'")
    print(f"  git tag v{args.version} && git push origin main v{args.version}")
    print(f"  nox -s release -- {args.version} --upload")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
