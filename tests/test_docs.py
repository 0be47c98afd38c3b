"""Code samples in README.md and docs/: they compile, and excerpts match the tested files."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.driver_independent

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def samples() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        for i, match in enumerate(BLOCK.finditer(page.read_text())):
            code = textwrap.dedent(match.group(1))  # blocks nested in list items are indented
            found.append((page.relative_to(ROOT).as_posix(), i, code))
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
def test_listener_sample_of_breaking_migrations_page_runs(worker):
    """The strategy-2 listener, executed against a real change."""
    from testproject.evolving.models import Widget

    page = (ROOT / "docs" / "how-to" / "breaking-migrations.md").read_text()
    code = next(c for c in BLOCK.findall(page) if "def on_widget" in c)
    scheduled: list[tuple[int, int]] = []
    namespace = {"schedule": lambda pk, priority: scheduled.append((pk, priority))}
    from pgpubsub_simplehistory.listeners import unsubscribe
    from pgpubsub_simplehistory.registry import listeners_of
    from testproject.evolving.channels import WidgetChannel

    before = {s.callback for s in listeners_of(WidgetChannel)}
    try:
        exec(compile(code, "breaking-migrations.md", "exec"), namespace)
        widget = Widget.objects.create(name="docs", priority=5)
        worker.drain()
    finally:
        for subscription in listeners_of(WidgetChannel):
            if subscription.callback not in before:
                unsubscribe(WidgetChannel, subscription.callback)
    assert scheduled == [(widget.pk, 5)]


def page_samples(path: str) -> list[str]:
    return BLOCK.findall((ROOT / "docs" / path).read_text())


@pytest.fixture
def exec_sample():
    """Run a docs sample; disconnect the signal receivers it connected afterwards."""
    from pgpubsub_simplehistory import signals

    all_signals = [
        signals.notification_processed,
        signals.notification_failed,
        signals.notification_parked,
    ]
    before = {id(s): list(s.receivers) for s in all_signals}

    def run(code: str, name: str) -> dict:
        namespace: dict = {"__name__": f"docs_sample_{name}"}
        exec(compile(code, name, "exec"), namespace)
        return namespace

    yield run
    for signal in all_signals:
        with signal.lock:
            signal.receivers = before[id(signal)]
            signal.sender_receivers_cache.clear()


def _settle_one_of_each(worker) -> None:
    from testproject.shop.channels import OrderChannel
    from testproject.shop.factories import OrderFactory

    OrderFactory(status="fine")
    OrderFactory(status="explode")
    original = OrderChannel.max_attempts, OrderChannel.retry_base_delay
    OrderChannel.max_attempts, OrderChannel.retry_base_delay = 2, 0.01
    try:
        worker.sweep_interval = 0.05
        worker.drain(quiet=0.5)
    finally:
        OrderChannel.max_attempts, OrderChannel.retry_base_delay = original


@pytest.mark.django_db(transaction=True)
def test_prometheus_sample_counts_settled_notifications(worker, exec_sample):
    import prometheus_client

    [code] = [c for c in page_samples("how-to/observability.md") if "prometheus_client" in c]
    ns = exec_sample(code, "prometheus")
    try:
        _settle_one_of_each(worker)
        channel = "testproject.shop.channels.OrderChannel"
        value = prometheus_client.REGISTRY.get_sample_value

        def count(outcome: str) -> float | None:
            return value("history_notifications_total", {"channel": channel, "outcome": outcome})

        assert (count("processed"), count("failed"), count("parked")) == (1.0, 1.0, 1.0)
        assert value("history_notification_seconds_count", {"channel": channel}) == 1.0
    finally:
        prometheus_client.REGISTRY.unregister(ns["NOTIFICATIONS"])
        prometheus_client.REGISTRY.unregister(ns["SECONDS"])


@pytest.mark.django_db(transaction=True)
def test_opentelemetry_sample_records_settled_notifications(worker, exec_sample):
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    [code] = [c for c in page_samples("how-to/observability.md") if "opentelemetry" in c]
    ns = exec_sample(code, "opentelemetry")  # keep it: receivers are weak references
    _settle_one_of_each(worker)
    assert ns["on_settled"]
    points = {
        (metric.name, point.attributes["outcome"]): point
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
        if point.attributes.get("model") == "shop.Order"
    }
    counts = {k[1]: p.value for k, p in points.items() if k[0] == "history.notifications"}
    assert counts == {"processed": 1, "failed": 1, "parked": 1}
    assert points[("history.notification.duration", "processed")].count == 1


def test_logging_sample_configures_the_json_formatter():
    import json
    import logging
    import logging.config

    from pgpubsub_simplehistory import JsonFormatter

    [code] = [c for c in page_samples("how-to/observability.md") if "LOGGING = {" in c]
    namespace: dict = {}
    exec(compile(code, "observability.md", "exec"), namespace)
    logger = logging.getLogger("pgpubsub_simplehistory")
    saved = logger.handlers[:], logger.level
    try:
        logging.config.dictConfig(namespace["LOGGING"])
        [handler] = logger.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        record = logger.makeRecord(
            logger.name, logging.INFO, __file__, 1, "processed", (), None, extra={"outcome": "x"}
        )
        assert json.loads(handler.format(record))["outcome"] == "x"
    finally:
        logger.handlers[:], logger.level = saved


@pytest.mark.parametrize(
    "command",
    ["listen", "replay_history", "parked", "listener_health", "pending_notifications"],
)
def test_every_command_option_is_documented(command):
    """docs/reference/commands.md names every option the command accepts."""
    import argparse

    from django.core.management import BaseCommand, load_command_class

    page = (ROOT / "docs" / "reference" / "commands.md").read_text()
    section = page.split(f"## `{command}")[1].split("\n## ")[0]
    cmd = load_command_class("pgpubsub_simplehistory", command)
    parser = cmd.create_parser("manage.py", command)
    common = {o for a in BaseCommand().create_parser("m", "x")._actions for o in a.option_strings}
    parsers = [parser] + [
        sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for sub in action.choices.values()
    ]
    options = {
        option
        for p in parsers
        for action in p._actions
        for option in action.option_strings
        if option.startswith("--") and option not in common
    }
    assert options, command
    missing = sorted(o for o in options if f"`{o}" not in section and f" {o}`" not in section)
    assert not missing, f"{command}: undocumented options {missing}"


def test_every_setting_is_read_in_conf_and_documented():
    """conf.py reads every PGPUBSUB_SIMPLEHISTORY_* setting (no other module reads settings of
    ours), and docs/reference/settings.md has a row for each."""
    from pgpubsub_simplehistory import conf

    source = (ROOT / "pgpubsub_simplehistory" / "conf.py").read_text()
    used = {conf.PREFIX + name for name in re.findall(r'_get\("([A-Z_]+)"', source)}
    assert "PGPUBSUB_SIMPLEHISTORY_BATCH_SIZE" in used
    for path in (ROOT / "pgpubsub_simplehistory").rglob("*.py"):
        if path.name != "conf.py":
            assert not re.search(
                r"getattr\(\s*settings,\s*[\"']PGPUBSUB_SIMPLEHISTORY", path.read_text()
            ), path
    page = (ROOT / "docs" / "reference" / "settings.md").read_text()
    assert sorted(n for n in used if f"| `{n}` |" not in page) == []
