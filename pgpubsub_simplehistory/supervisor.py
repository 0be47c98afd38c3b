"""The supervisor of ``manage.py listen --processes N``: N worker processes, restarted when
they fail, stopped together."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("pgpubsub_simplehistory")


def supervise(argv: Sequence[str], processes: int, *, restart: bool = True) -> bool:
    """Run ``processes`` copies of the worker command ``argv`` until SIGTERM or SIGINT, which
    is forwarded to them. Returns False when a worker failed (and was not restarted, or the
    supervisor was not stopping)."""
    workers = [subprocess.Popen(list(argv)) for _ in range(processes)]
    stopping = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = False
    while any(w.poll() is None for w in workers) or (restart and not stopping):
        for i, worker in enumerate(workers):
            code = worker.poll()
            if code is None or stopping:
                continue
            if code != 0:
                failed = True
            if restart and code != 0:
                logger.warning("worker process %s exited with %s; restarting it", worker.pid, code)
                workers[i] = subprocess.Popen(list(argv))
        if not restart and all(w.poll() is not None for w in workers):
            break
        time.sleep(0.5)
    return not (failed and not stopping)
