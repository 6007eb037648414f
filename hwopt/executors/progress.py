"""Progress of a long run across an executor: done/total, rate and time left.

On a terminal: a live rich bar with the rate (in the unit that reads best:
per hour for emulated kernels that take minutes, per minute or per second for
fast ones) and the time left at that rate. In a log (CI, a
background sweep): one line when it starts, one at the first finished item,
then at most one every ``interval`` seconds as items finish, and one at the end, so a run of hours
leaves a readable trail instead of nothing or a line per kernel.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def rate_text(per_second: float, unit: str) -> str:
    """``12.5 models/s``, ``42 kernels/min``, ``7.0 kernels/h``: the unit in which the rate reads as a
    number a person can picture (not "10518/h")."""
    for scale, suffix in ((1.0, "s"), (60.0, "min"), (3600.0, "h")):
        value = per_second * scale
        if value >= 1.0 or suffix == "h":
            return f"{value:.1f} {unit}/{suffix}" if value < 10 else f"{value:.0f} {unit}/{suffix}"
    return ""  # not reached


class Rate:
    """Items per unit of time since the start and the time left at that rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()

    def describe(self, done: int, total: int, unit: str = "kernels") -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        if done <= 0:
            return f"{done}/{total} {unit}, {_duration(elapsed)} elapsed"
        left = (total - done) / (done / elapsed)
        return (f"{done}/{total} {unit} ({100 * done / max(total, 1):.1f}%), {rate_text(done / elapsed, unit)}, "
                f"{_duration(elapsed)} elapsed, ETA {_duration(left)}")


@contextmanager
def rate_progress(console: Console, quiet: bool = False, interval: float = 60.0,
                  unit: str = "kernels") -> Iterator[Callable[[str, int, int], None] | None]:
    """Yields a callback (label, done, total) that shows progress with rate and ETA on ``console``."""
    if quiet:
        yield None
        return
    rates: dict[str, Rate] = {}
    if not console.is_terminal:
        last: dict[str, tuple[float, int]] = {}

        def log(label: str, done: int, total: int) -> None:
            rate = rates.setdefault(label, Rate())
            now = time.monotonic()
            shown_at, shown_done = last.get(label, (-float("inf"), -1))
            # The first finished item at once (a slow run shows its pace early), then every interval.
            if done == total or (done != shown_done and (now - shown_at >= interval or shown_done <= 0)):
                last[label] = (now, done)
                console.print(f"{label}: {rate.describe(done, total, unit)}", markup=False, highlight=False)

        yield log
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def update(label: str, done: int, total: int) -> None:
            rate = rates.setdefault(label, Rate())
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total, status="")
            progress.update(tasks[label], completed=done, total=total, status=rate.describe(done, total, unit))

        yield update
