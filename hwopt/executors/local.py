"""The ``local`` executor: tasks in this process (``jobs = 1``) or in a pool of ``jobs`` processes.

With one job nothing changes from a plain loop (same process, same failure
behaviour). A pool uses the ``spawn`` start method: a forked child would
inherit the parent's threads (onnxruntime's, rich's) in whatever state they
were in.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Iterator, Sequence

from hwopt.errors import HwoptError
from hwopt.executors.base import Task


class LocalExecutor:
    name = "local"

    def __init__(self, jobs: int = 1, **_ignored: Any) -> None:
        if jobs < 1:
            raise HwoptError(f"--jobs {jobs}: needs at least 1")
        self.slots = jobs
        self.one_cpu_per_task = jobs > 1
        self._pool: ProcessPoolExecutor | None = None

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        if self.slots == 1 or len(tasks) <= 1:
            for index, task in enumerate(tasks):
                yield index, task.fn(*task.args)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.slots, mp_context=multiprocessing.get_context("spawn"))
        pending = {self._pool.submit(task.fn, *task.args): index for index, task in enumerate(tasks)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
