"""Progress on stderr: live bars on a terminal, one line per stage in a log.

Work reports progress as ``callback(label, done, total)``; labels such as
``fuse-ibn: block 3/16 (project)`` belong to the stage named before the first
colon (``fuse-ibn``). On a terminal each stage gets a live bar, and a line with
its duration once it ends. In a log (CI, a pipeline) only that line is printed:
a run of ``optimize`` writes a handful of lines instead of one per sample.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

Callback = Callable[[str, int, int], None]


def stage_of(label: str) -> str:
    return label.split(":", 1)[0].strip()


class StageLines:
    """Collects updates per stage; ``line`` says how a stage went once it is over."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.stage: str | None = None
        self.started = 0.0
        self.parts: set[str] = set()
        self.last: tuple[str, int, int] | None = None

    def update(self, label: str, done: int, total: int) -> bool:
        """Record an update; True when it starts a new stage."""
        stage = stage_of(label)
        new = stage != self.stage
        if new:
            self.close()
            self.stage, self.started, self.parts = stage, time.perf_counter(), set()
        self.parts.add(label)
        self.last = (label, done, total)
        return new

    def close(self) -> None:
        if self.stage is None or self.last is None:
            return
        seconds = time.perf_counter() - self.started
        label, done, total = self.last
        detail = f"{len(self.parts)} parts" if len(self.parts) > 1 else f"{done}/{total}"
        self.emit(f"{self.stage}: {detail}, {seconds:.1f} s")
        self.stage, self.last = None, None


@contextmanager
def progress_bar(console: Console, quiet: bool) -> Iterator[Callback | None]:
    """Yields the progress callback (None when quiet)."""
    if quiet:
        yield None
        return
    if not console.is_terminal:
        lines = StageLines(lambda text: console.print(text, markup=False, highlight=False))
        try:
            yield lambda label, done, total: lines.update(label, done, total) and None
        finally:
            lines.close()
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        lines = StageLines(lambda text: progress.console.print(f"[green]done[/] {text}", highlight=False))
        task: list[int] = []

        def update(label: str, done: int, total: int) -> None:
            if lines.update(label, done, total):
                if task:
                    progress.remove_task(task.pop())
                task.append(progress.add_task(label, total=total))
            progress.update(task[0], description=label, completed=done, total=total)

        try:
            yield update
        finally:
            lines.close()
