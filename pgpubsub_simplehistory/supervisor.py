"""The supervisor of ``manage.py listen --processes N``: N worker processes, each restarted when
it exits for any reason while the supervisor is not stopping, stopped together.

It gives up, stopping the others and returning False, when it cannot keep its workers: a worker
slot that had to be restarted ``MAX_RESTARTS`` times within ``RESTART_WINDOW`` seconds (a worker
that cannot start, or dies at once); or, without restarts, as soon as a worker fails.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("pgpubsub_simplehistory")

#: A slot restarted this many times within RESTART_WINDOW seconds makes the supervisor give up.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: Seconds between two looks at the workers.
POLL = 0.2
#: Seconds the workers get to finish their notification after a stop signal, before SIGKILL.
STOP_GRACE = 30.0


class _Slot:
    def __init__(self, number: int, argv: Sequence[str]) -> None:
        self.number = number
        self.argv = list(argv)
        self.restarts: deque[float] = deque()
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv)

    def restart(self) -> None:
        now = time.monotonic()
        self.restarts.append(now)
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
            self.restarts.popleft()
        self.process = self._start()

    @property
    def failing(self) -> bool:
        return len(self.restarts) >= MAX_RESTARTS


def supervise(argv: Sequence[str], processes: int, *, restart: bool = True) -> str | None:
    """Run ``processes`` copies of the worker command ``argv`` until SIGTERM or SIGINT, which
    is forwarded to them. Returns None when stopped by a signal with every worker ending
    cleanly, else what went wrong: it gave up (see the module), or a worker ended with an
    error on stop."""
    slots = [_Slot(n, argv) for n in range(1, processes + 1)]
    stopping = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for slot in slots:
            if slot.process.poll() is None:
                slot.process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    gave_up: str | None = None
    while not stopping and gave_up is None:
        time.sleep(POLL)
        for slot in slots:
            code = slot.process.poll()
            if code is None or stopping:
                continue
            if not restart and code != 0:
                gave_up = f"worker process {slot.process.pid} exited with {code}"
                break
            if slot.failing:
                gave_up = (
                    f"worker {slot.number} exited {len(slot.restarts) + 1} times within "
                    f"{RESTART_WINDOW:.0f}s (last exit status {code})"
                )
                break
            logger.warning(
                "worker process %s exited with %s; restarting it", slot.process.pid, code
            )
            slot.restart()
        if not restart and all(slot.process.poll() is not None for slot in slots):
            break  # every worker ended cleanly: nothing left to supervise
    if gave_up is not None:
        for slot in slots:
            if slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)
    clean = _wait(slots)
    if gave_up is not None:
        return f"cannot keep {processes} workers running: {gave_up}"
    return None if clean else "a worker process ended with an error"


def _wait(slots: list[_Slot]) -> bool:
    """Wait for every worker to end (SIGKILL after STOP_GRACE); True if all ended cleanly."""
    deadline = time.monotonic() + STOP_GRACE
    clean = True
    for slot in slots:
        try:
            code = slot.process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            slot.process.kill()
            code = slot.process.wait()
        clean = clean and code in (0, -signal.SIGTERM, -signal.SIGINT)
    return clean
