"""Code samples in README.md and docs/: they compile, and excerpts match the tested files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def samples() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        for i, match in enumerate(BLOCK.finditer(page.read_text())):
            found.append((page.relative_to(ROOT).as_posix(), i, match.group(1)))
    return found


@pytest.mark.parametrize(("page", "index", "code"), samples(), ids=lambda v: str(v)[:40])
def test_python_samples_compile(page, index, code):
    compile(code.replace("...", "pass") if code.strip().endswith("...") else code, page, "exec")


EXCERPTS = [s for s in samples() if s[2].startswith("# from: ")]


def test_docs_have_excerpts():
    assert EXCERPTS


@pytest.mark.parametrize(("page", "index", "code"), EXCERPTS, ids=lambda v: str(v)[:40])
def test_excerpts_match_their_source(page, index, code):
    first = code.splitlines()[0]
    source = (ROOT / first.removeprefix("# from: ").strip()).read_text()
    body = "\n".join(code.splitlines()[1:]).strip()
    assert body in source, f"{page} sample {index} drifted from its source"


@pytest.mark.django_db(transaction=True)
def test_listener_sample_of_breaking_migrations_page_runs(listener):
    """The strategy-2 listener, executed against a real change."""
    from testproject.evolving.models import Widget

    page = (ROOT / "docs" / "breaking-migrations.md").read_text()
    code = next(c for c in BLOCK.findall(page) if "def on_widget" in c)
    scheduled: list[tuple[int, int]] = []
    namespace = {"schedule": lambda pk, priority: scheduled.append((pk, priority))}
    from pgpubsub_simplehistory.subscribe import subscriptions_of, unsubscribe
    from testproject.evolving.channels import WidgetChannel

    before = {s.callback for s in subscriptions_of(WidgetChannel)}
    try:
        exec(compile(code, "breaking-migrations.md", "exec"), namespace)
        widget = Widget.objects.create(name="docs", priority=5)
        listener.drain()
    finally:
        for subscription in subscriptions_of(WidgetChannel):
            if subscription.callback not in before:
                unsubscribe(WidgetChannel, subscription.callback)
    assert scheduled == [(widget.pk, 5)]
