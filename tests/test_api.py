"""The public API: what ``pgpubsub_simplehistory`` exports, and the package's import graph."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

from django.dispatch import Signal

import pgpubsub_simplehistory as psh

from .conftest import wait_for

PACKAGE = Path(psh.__file__).parent

#: Each exported name and the kind of object the docs (docs/reference/api.md) say it is.
KINDS = {
    "BackfillHistory": "class",
    "ChannelConfigurationError": "exception",
    "HistoricalRecords": "class",
    "HistoryEvent": "class",
    "HistorySubscription": "class",
    "HistoryTriggerChannel": "class",
    "InvalidPayload": "exception",
    "JsonFormatter": "class",
    "MigrationRef": "class",
    "MissingHistoryRecord": "exception",
    "PgpubsubSimplehistoryError": "exception",
    "ReplayError": "exception",
    "ReplayResult": "class",
    "ResolvedChange": "class",
    "RetryPolicy": "class",
    "Listener": "class",
    "TransactionLeftAborted": "exception",
    "UnknownModel": "exception",
    "Worker": "class",
    "notification_failed": "signal",
    "notification_parked": "signal",
    "notification_processed": "signal",
    "post_delete_listener": "function",
    "post_insert_listener": "function",
    "post_save_listener": "function",
    "post_update_listener": "function",
    "register": "function",
    "replay": "function",
    "resolve": "function",
    "resolve_record": "function",
    "subscribe": "function",
    "unsubscribe": "function",
}


def _kind(value: object) -> str:
    if isinstance(value, type):
        return "exception" if issubclass(value, BaseException) else "class"
    if isinstance(value, Signal):
        return "signal"
    if inspect.isfunction(value):
        return "function"
    return type(value).__name__


def _submodules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages([str(PACKAGE)], prefix="pgpubsub_simplehistory.")
        if ".migrations." not in info.name
    ]


def test_every_exported_name_is_the_documented_kind_after_every_submodule_is_imported():
    for name in _submodules():  # what shadowed `subscribe` by its module: import them all
        importlib.import_module(name)
    assert sorted(psh.__all__) == sorted(KINDS)
    got = {name: _kind(getattr(psh, name)) for name in psh.__all__}
    assert got == KINDS
    from pgpubsub_simplehistory import register, subscribe

    assert inspect.isfunction(subscribe) and subscribe.__module__.endswith(".listeners")
    assert register.__module__.endswith(".tracking")  # not simple-history's or a check's


def test_no_module_is_named_like_an_exported_name():
    modules = {name.rsplit(".", 1)[-1].lower() for name in _submodules()}
    assert not modules & {name.lower() for name in psh.__all__}


def test_the_type_checking_imports_list_exactly_the_exports():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    [block] = [
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    ]
    names = {alias.asname or alias.name for node in block.body for alias in node.names}
    assert names == set(psh.__all__)
    for module in psh._MODULES:
        importlib.import_module(f"pgpubsub_simplehistory.{module}")


def _imports(path: Path, module: str) -> set[str]:
    """Modules of the package imported by ``path``, at any level (functions included), but not
    under ``if TYPE_CHECKING:`` (never executed)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate.startswith("pgpubsub_simplehistory") and candidate in MODULE_PATHS:
                found.add(candidate)
    return found - {module}


MODULE_PATHS = {
    (
        "pgpubsub_simplehistory." + str(p.relative_to(PACKAGE).with_suffix("")).replace("/", ".")
    ).removesuffix(".__init__"): p
    for p in PACKAGE.rglob("*.py")
    if "migrations" not in p.parts
}
MODULE_PATHS["pgpubsub_simplehistory"] = PACKAGE / "__init__.py"


def test_no_import_cycle_in_the_package_function_level_imports_included():
    graph = {module: _imports(path, module) for module, path in MODULE_PATHS.items()}
    graph["pgpubsub_simplehistory"] = set()  # its lazy __getattr__ imports nothing eagerly
    assert graph["pgpubsub_simplehistory.registry"] == set()  # the registry is a leaf

    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_subscribe_called_directly_is_delivered_by_a_real_worker(manage):
    from testproject.shop.factories import OrderFactory
    from testproject.shop.models import ReceivedEvent

    proc = manage("listen", env={"SHOP_SUBSCRIBE_DIRECTLY": "1"})
    wait_for(lambda: "worker ready" in proc.stderr_text(), timeout=30)
    order = OrderFactory(status="direct")
    event = wait_for(
        lambda: ReceivedEvent.objects.filter(listener="on_order_via_subscribe").first()
    )
    assert (event.object_id, event.new["status"]) == (str(order.pk), "direct")
