"""Build the sdist and the wheel, ``twine check`` them, and check the wheel holds the package only.

Run from the repository root with ``build`` and ``twine`` installed; exits non-zero on failure.
``check_dist.py DIR`` checks the distributions already built in DIR instead (``.ci/release.py``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REQUIRED = {
    "pgpubsub_simplehistory/__init__.py",
    "pgpubsub_simplehistory/py.typed",
    "pgpubsub_simplehistory/migrations/0001_initial.py",
    "pgpubsub_simplehistory/management/commands/listen.py",
    "pgpubsub_simplehistory/templates/admin/pgpubsub_simplehistory/notification/change_form.html",
}


def main(argv: list[str]) -> int:
    if argv:
        return check(Path(argv[0]))
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "build", "--outdir", out, "."], check=True)
        return check(Path(out))


def check(dist: Path) -> int:
    built = sorted(dist.iterdir())
    subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, built)], check=True
    )
    [wheel] = [p for p in built if p.suffix == ".whl"]
    names = zipfile.ZipFile(wheel).namelist()
    problems = []
    stray = [
        n for n in names if not n.startswith("pgpubsub_simplehistory/") and ".dist-info/" not in n
    ]
    if stray:
        problems.append(f"files outside the package: {stray[:10]}")
    missing = sorted(REQUIRED - set(names))
    if missing:
        problems.append(f"missing from the wheel: {missing}")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("LICENSE missing from the wheel metadata")
    caches = [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    if caches:
        problems.append(f"bytecode in the wheel: {caches[:5]}")
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_dist: {wheel.name}: {len(names)} files, package only, twine check passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
