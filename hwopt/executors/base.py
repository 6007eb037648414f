"""The executor interface: run independent tasks somewhere, hand their results back as each one finishes.

A task is a module-level function and its arguments (both picklable: they may
travel to another process or machine). ``run`` yields ``(index, result)`` in
completion order, so the caller (the single writer of any output) can save
each result the moment it exists. An exception raised by a task is re-raised
by ``run``; tasks that can fail for a reason the caller must report (a kernel
the backend refuses, a bad model) return that reason instead. A task the
executor could not finish after its retries (its worker killed each time, e.g.
for memory) comes back as a ``TaskLost``: the caller records it and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence


@dataclass(frozen=True)
class Task:
    fn: Callable[..., Any]
    args: tuple = ()


@dataclass(frozen=True)
class TaskLost:
    """A task the executor gave up on (its worker died on every try)."""

    reason: str


class Executor(Protocol):
    name: str
    slots: int  # tasks that run at once (sizes batches: a few per slot keeps every slot busy)
    one_cpu_per_task: bool  # tasks share the machine's CPUs: a task must not fan out into more processes

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        """Run every task; yield (task index, result) as each finishes."""
        ...

    def close(self) -> None:
        """Release processes or the cluster connection."""
        ...
