"""A Ray cluster of several nodes on this machine, bound to 127.0.0.1 (tests, benchmarks, a one-box sweep).

Ray's own multi-node-on-one-machine utility (``ray.cluster_utils.Cluster``)
starts the head and each extra node (its own raylet and worker processes) as
children of this process. Ray replaces a loopback node address with the
machine's outward one unless it is told the cluster is single-machine (the
switch macOS and Windows default to); with it every Ray server binds to
127.0.0.1 only. Usage statistics (reported to Ray's authors by default) are
off. ``ray stop`` is never used: it ends every Ray process of the user on the
machine, not just this cluster's.
"""

from __future__ import annotations

import os
import sys

LOOPBACK = "127.0.0.1"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
STORE_BYTES = 80 * 1024 * 1024  # per node: tasks here pass kernel lists and rows, not tensors


def loopback_only() -> None:
    """Keep a Ray cluster started from (or joined by) this process on 127.0.0.1: the environment its
    processes inherit, and the switch itself where Ray is imported already (it reads it at import)."""
    os.environ.update(LOOPBACK_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


class LocalRayCluster:
    """A head and ``add_worker`` nodes on this machine; ``address`` is what ``--address`` takes."""

    def __init__(self, head_cpus: int = 1) -> None:
        loopback_only()
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": head_cpus, "include_dashboard": False, "object_store_memory": STORE_BYTES,
            "node_ip_address": LOOPBACK})
        self.address: str = self.cluster.address
        self.workers: list = []

    def add_worker(self, num_cpus: int = 1, resources: dict[str, float] | None = None):
        node = self.cluster.add_node(num_cpus=num_cpus, resources=resources or {}, object_store_memory=STORE_BYTES,
                                     node_ip_address=LOOPBACK)
        self.workers.append(node)
        return node

    def stop(self) -> None:
        import ray

        if ray.is_initialized():  # Ray refuses to remove the node a connected driver stands on
            ray.shutdown()
        self.cluster.shutdown()
