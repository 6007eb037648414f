"""The ``ray`` executor: tasks on a Ray cluster (``pip install 'hwopt[ray]'``).

Each task is one Ray task taking one CPU (plus one unit of a custom resource
when given: a device farm names its device kinds as resources, so a task
for a ``pixel7`` only lands on a node that has one). A worker that dies mid-task (a killed
process, a lost node) has its task run again, up to ``retries`` times (Ray's
own task retries): the task functions hwopt sends are pure (a kernel batch's
measurements, a model's report), so running one twice is harmless and only
the finished result comes back. Results are yielded as each task finishes
(``ray.wait``), so the caller saves them as they come.

``address``: ``auto`` (the cluster this machine's ``ray start`` joined),
``HOST:PORT`` of a head, or None to start a private single-node cluster for
this run (``jobs`` CPUs, bound to 127.0.0.1). Usage statistics are switched
off: nothing but the cluster's own traffic.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

from hwopt.errors import HwoptError
from hwopt.executors.base import Task, TaskLost
from hwopt.executors.ray_local import LOOPBACK, STORE_BYTES, loopback_only



def _import_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray reports usage to its authors unless told not to
    try:
        import ray
    except ModuleNotFoundError:
        raise HwoptError("--executor ray needs Ray: pip install 'hwopt[ray]'") from None
    return ray


def _call(fn, args):
    return fn(*args)


class RayExecutor:
    name = "ray"
    one_cpu_per_task = True  # each task reserves one CPU of its node

    def __init__(self, address: str | None = "auto", resources: dict[str, float] | None = None, retries: int = 3,
                 jobs: int | None = None, **_ignored: Any) -> None:
        if not address or address.rsplit(":", 1)[0] in (LOOPBACK, "localhost"):
            loopback_only()  # before Ray is imported: it reads the switch at import
        self.ray = ray = _import_ray()
        self.resources = dict(resources or {})
        self.retries = retries
        # A task killed for memory is retried this many times too (Ray's default: forever, and a layer too
        # large for the node's free memory would then hold its CPU for good).
        os.environ.setdefault("RAY_task_oom_retries", str(retries))
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            try:
                if address:
                    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
                else:  # a private cluster for this run, on loopback only
                    ray.init(num_cpus=jobs, _node_ip_address=LOOPBACK, include_dashboard=False,
                             object_store_memory=STORE_BYTES, log_to_driver=False, logging_level="ERROR")
            except ConnectionError as exc:
                raise HwoptError(f"--address {address}: cannot reach a Ray cluster ({str(exc).splitlines()[0]})") \
                    from None
        total = ray.cluster_resources()
        missing = [name for name in self.resources if total.get(name, 0) < self.resources[name]]
        if missing:
            raise HwoptError(f"the Ray cluster has no resource {missing[0]!r} (it has: {', '.join(sorted(total))})")
        # Concurrent tasks: CPUs, or the scarcest custom resource a task needs (one device each).
        slots = [total.get("CPU", 1)] + [total[name] / amount for name, amount in self.resources.items()]
        self.slots = max(1, int(min(slots)))
        self._remote = ray.remote(num_cpus=1, resources=self.resources or None, max_retries=retries)(_call)

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        pending = {self._remote.remote(task.fn, task.args): index for index, task in enumerate(tasks)}
        try:
            while pending:
                # A timeout, so Ctrl-C reaches this process even while every task is hours long.
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        raise exc.as_instanceof_cause() from None  # the task's own exception (e.g. HwoptError)
                    except ray.exceptions.RayError as exc:  # its worker died on every try (killed, out of memory)
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        result = TaskLost(f"{type(exc).__name__} after {self.retries} retries: {first}"[:300])
                    yield index, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owns_connection and self.ray.is_initialized():
            self.ray.shutdown()
