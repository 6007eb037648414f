"""Executors (across stages): where independent pieces of work run (kernel batches of a sweep, whole
models; ``batch`` holds the whole-model tasks of ``hwopt optimize/measure`` over many files).

``local`` (the default) runs them in this process (``--jobs 1``) or in a
process pool (``--jobs N``); ``ray`` sends them to a Ray cluster as tasks.
Each entry names a factory ``module:attribute`` imported only when chosen, so
Ray (an optional extra, ``hwopt[ray]``) is never imported on the default path.
"""

from __future__ import annotations

import importlib
from typing import Any

from hwopt.errors import HwoptError
from hwopt.executors.base import Executor, Task, TaskLost

EXECUTORS: dict[str, str] = {
    "local": "hwopt.executors.local:LocalExecutor",
    "ray": "hwopt.executors.ray_cluster:RayExecutor",
}

__all__ = ["EXECUTORS", "Executor", "Task", "TaskLost", "get_executor"]


def get_executor(name: str, **options: Any) -> Executor:
    """The executor called ``name``, built with ``options`` (jobs, address, resources, ...)."""
    if name not in EXECUTORS:
        raise HwoptError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")
    module_name, attribute = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)(**options)
