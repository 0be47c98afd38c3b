"""django-pgpubsub's own listen loop for the benchmark channel (our ``listen`` shadows theirs)."""

from __future__ import annotations

import signal
import sys

from .harness import setup


def main() -> None:
    setup(fresh=False)
    from pgpubsub.listen import listen

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listen(["testproject.bench.channels.PubsubChannel"], autorestart_on_failure=False)


if __name__ == "__main__":
    main()
