"""A progress bar for long-running management commands (stderr, terminals only)."""

from __future__ import annotations

from typing import Any, TextIO

from django.core.management.base import CommandParser

#: Below this many items the bar is not shown unless asked for.
THRESHOLD = 100


def is_tty(stream: Any) -> bool:
    """Whether ``stream`` (a file or Django's ``OutputWrapper``) is a terminal."""
    inner = getattr(stream, "_out", stream)
    return bool(getattr(inner, "isatty", lambda: False)())


class Progress:
    """``[#####.....] done/total`` redrawn in place, at most once per percent."""

    def __init__(self, stream: Any, total: int) -> None:
        self.out: TextIO = getattr(stream, "_out", stream)
        self.total = max(total, 1)
        self.done = 0
        self.shown = -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        percent = min(self.done * 100 // self.total, 100)
        if percent != self.shown:
            self._draw(percent, "")

    def show(self, done: int, total: int, note: str = "") -> None:
        """Redraw with these figures (for a total that grows while it runs) and a note."""
        self.done, self.total = done, max(total, 1)
        self._draw(min(self.done * 100 // self.total, 100), note)

    def _draw(self, percent: int, note: str) -> None:
        self.shown = percent
        filled = percent * 30 // 100
        tail = f" {note}\x1b[K" if note else ""  # a note's length varies: clear the rest
        self.out.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}{tail}")
        self.out.flush()

    def finish(self) -> None:
        self.out.write("\n")
        self.out.flush()


def progress_bar(stream: Any, total: int, verbosity: int, wanted: bool | None) -> Progress | None:
    """A bar when asked for (``wanted`` True), or by default on a terminal for large totals.

    Never under ``--verbosity 0``.
    """
    if verbosity <= 0 or wanted is False:
        return None
    if wanted is None and not (total > THRESHOLD and is_tty(stream)):
        return None
    return Progress(stream, total)


def add_progress_arguments(parser: CommandParser, what: str) -> None:
    """``--progress`` / ``--no-progress`` (default: on a terminal, above the threshold)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help=f"Show a progress bar on stderr (default: on a terminal, for >{THRESHOLD} {what}).",
    )
    group.add_argument(
        "--no-progress",
        action="store_false",
        dest="progress",
        help="Never show the progress bar (on a terminal too).",
    )
