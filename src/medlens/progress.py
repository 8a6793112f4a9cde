"""Progress on long work: rich bars in a terminal, nothing in a pipe (where the runner logs one line per stage)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")


def in_terminal() -> bool:
    """True when progress bars can be drawn; in a pipe or a log file they would only leave blank lines."""
    from rich.console import Console

    return Console().is_terminal


def progress_bar() -> Progress:
    """The progress display used by every long stage (disabled outside a terminal)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True, disable=not in_terminal())


def track(it: Iterable[T], *, total: int | None = None, description: str) -> Iterator[T]:
    """A transient progress bar over ``it`` in a terminal; nothing in a pipe."""
    from rich.progress import track as rich_track

    return iter(rich_track(it, total=total, description=description, transient=True, disable=not in_terminal()))
