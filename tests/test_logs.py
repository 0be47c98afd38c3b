"""The log of a real ``manage.py listen`` (issue 15): full level names, one traceback per
failure (showing where it failed), and a worker id that tells the workers of ``--processes 2``
apart."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from django.db import connection, transaction

from pgpubsub_simplehistory.models import Notification
from testproject.shop.models import Customer, Order

from .conftest import Proc
from .test_faults import stop
from .test_faults_ii import (
    FAST_RETRIES,
    all_once,
    children,
    deliveries,
    expect,
    history_id,
    log_records,
    queue_state,
    tail,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.subprocess,
    pytest.mark.driver_independent,
]

#: The default --logformat: "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s".
RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>\S+) (?P<logger>\S+) \[(?P<worker>\d+)\] "
)
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
TRACEBACK = "Traceback (most recent call last)"
CHAINS = ("During handling of the above exception", "The above exception was the direct cause")


def parsed(stderr: str) -> list[tuple[str, int, str]]:
    """``(level, worker id, the whole record)`` of each log record of a worker's stderr."""
    found = []
    for record in log_records(stderr):
        match = RECORD.match(record)
        assert match, f"a line in no log record: {record[:300]!r}"
        found.append((match["level"], int(match["worker"]), record))
    return found


@pytest.fixture
def refusing_insert(transactional_db: None) -> Iterator[None]:
    """A trigger on shop_receivedevent that raises for the row ``on_order_saved`` writes for an
    order whose status is "refused": a database error inside the listener's own statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION psh_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.listener = 'on_order_saved' AND NEW.new ->> 'status' = 'refused' THEN
                    RAISE EXCEPTION 'refused by a trigger';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        cursor.execute(
            "CREATE TRIGGER psh_test_refuse BEFORE INSERT ON shop_receivedevent "
            "FOR EACH ROW EXECUTE FUNCTION psh_test_refuse()"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS psh_test_refuse ON shop_receivedevent")
        cursor.execute("DROP FUNCTION IF EXISTS psh_test_refuse()")


#: Kinds of failure: the order status that causes it, the error its log record names, and the
#: frame its one traceback must show (where it failed).
FAILURES = {
    "listener raises": ("explode", "RuntimeError: listener refuses order", "in on_order_saved"),
    "listener's statement fails": ("refused", "refused by a trigger", "in on_order_saved"),
    "commit fails": ("dangling", "commit failed: IntegrityError", "in _run"),
}


@pytest.mark.usefixtures("refusing_insert")
@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_failure_is_an_error_record_with_one_traceback_showing_where(
    manage: Callable[..., Proc], kind: str
) -> None:
    status, error, frame = FAILURES[kind]
    customer = Customer.objects.create(name="logs")
    with transaction.atomic():  # one batch
        before = Order.objects.create(customer=customer, status="fine")
        failing = Order.objects.create(customer=customer, status=status)
        after = Order.objects.create(customer=customer, status="fine")
    proc = manage("listen", "--sweep-interval", "0.2", env=FAST_RETRIES)
    expect(
        lambda: Notification.objects.filter(state="parked").exists() and all_once([before, after]),
        timeout=40,
        what=f"the {status!r} order parked and the others processed",
        explain=lambda: f"{queue_state()}; {tail(proc)}",
    )
    stderr = proc.stderr_text()
    assert stop(proc) == 0, tail(proc)
    assert deliveries([before, failing, after]) == {before.pk: 1, failing.pk: 0, after.pk: 1}

    records = parsed(stderr)
    # Full level names, never cut to four letters.
    assert {level for level, _, _ in records} <= LEVELS, sorted({r[0] for r in records})
    assert not re.search(r"\b(ERRO|WARN|CRIT|DEBU)\b", stderr), stderr[-3000:]
    hid = history_id(failing)
    mine = [(level, rec) for level, _, rec in records if f"history_id={hid} " in rec]
    # One record per attempt: retried twice, then parked; each an ERROR naming the error.
    assert len(mine) == 3, "\n".join(rec for _, rec in mine) or tail(proc)
    assert [level for level, _ in mine] == ["ERROR"] * 3, mine
    assert ["retry in" in rec.splitlines()[0] for _, rec in mine] == [True, True, False]
    assert "parked after 3 attempts" in mine[2][1].splitlines()[0], mine[2][1]
    for _, rec in mine:
        assert error in rec.splitlines()[0], rec
    # No traceback in the log but these three, and no chained ones.
    assert stderr.count(TRACEBACK) >= 3
    for _, rec in mine:
        assert rec.count(TRACEBACK) == 1, rec
        assert not [chain for chain in CHAINS if chain in rec], rec
        assert frame in rec, rec
    assert stderr.count(TRACEBACK) == 3, stderr[-4000:]


def test_the_workers_of_listen_processes_2_log_distinct_worker_ids(
    manage: Callable[..., Proc],
) -> None:
    proc = manage("listen", "--processes", "2", "--sweep-interval", "0.5", "--loglevel", "debug")
    expect(
        lambda: len(children(proc.pid)) == 2 and proc.stderr_text().count("worker ready") >= 2,
        30,
        "two workers ready",
        lambda: f"children {sorted(children(proc.pid))}; {tail(proc)}",
    )
    workers = children(proc.pid)
    customer = Customer.objects.create(name="two workers")
    orders = [Order.objects.create(customer=customer, status=f"o{i}") for i in range(20)]
    expect(lambda: all_once(orders), 30, "the orders processed", lambda: tail(proc))
    assert stop(proc) == 0, tail(proc)
    records = parsed(proc.stderr_text())

    assert {level for level, _, _ in records} <= LEVELS
    ready = [worker for _, worker, rec in records if rec.endswith("] worker ready")]
    assert sorted(ready) == sorted(workers), (ready, workers)
    assert len(set(ready)) == 2 and proc.pid not in ready
    stopped = {worker for _, worker, rec in records if rec.endswith("] worker stopped")}
    assert stopped == workers
    # Every line of a worker says which: a processed line carries one of the two ids.
    processed = [worker for _, worker, rec in records if " model shop.Order " in rec]
    assert len(processed) == 20 and set(processed) <= workers, (processed, workers)
    # The customer's insert, on a non-lockable channel: each worker processed it, and says so.
    customers = [worker for _, worker, rec in records if " model shop.Customer " in rec]
    assert sorted(customers) == sorted(workers), (customers, workers)
