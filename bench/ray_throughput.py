"""Kernels per hour through the Ray executor with 1 and 2 worker nodes on this machine, in one run.

A Ray cluster on 127.0.0.1 (a one-CPU head, then one more one-CPU node)
profiles the same npu32 kernels twice, each time into a fresh emulator cache
(so SCALE-Sim really runs): once with only the head, once with both nodes.
The kernels are drawn from the npu32 sweep kernels the shipped table lacks,
spread evenly over a band of emulation work (``simulation_cost``: padded
ifmap h*w x channels x filters), so the figures say what the remaining sweep
costs. Prints kernels/h and work/h for 1 and 2 workers, their ratio, and the
remaining sweep's cost on 1, 8 and 64 nodes of two workers each (work left /
the measured two-worker work rate per node), which ``docs/cluster.md`` quotes.

    nice -n 10 python -m bench.ray_throughput [--kernels 12] [--min-work 1e5] [--max-work 3e6]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from hwopt.backends.base import read_table
from hwopt.backends.scalesim import simulation_cost
from hwopt.profile import profile_with, sweep
from hwopt.targets import load_target

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernels", type=int, default=12)
    parser.add_argument("--min-work", type=float, default=1e5)
    parser.add_argument("--max-work", type=float, default=3e6)
    parser.add_argument("--skip", type=Path, action="append", default=[],
                        help="also count kernels in this table as done (e.g. a separate sweep table)")
    args = parser.parse_args()
    target = load_target("npu32")
    done = {m.kernel for table in [REPO / "estimator/npu32/measurements.csv.gz", *args.skip]
            if table.exists() for m in read_table(table)}
    remaining = [k for k in sweep(target.parallelism) if k not in done]
    work_left = sum(simulation_cost(k) for k in remaining)
    band = sorted((k for k in remaining if args.min_work <= simulation_cost(k) <= args.max_work), key=simulation_cost)
    sample = [band[int(i)] for i in np.linspace(0, len(band) - 1, min(args.kernels, len(band)))]
    sample_work = sum(simulation_cost(k) for k in sample)
    print(f"remaining npu32 sweep: {len(remaining)} kernels, work {work_left:.3g}; sample: {len(sample)} kernels "
          f"of work {args.min_work:.0e}..{args.max_work:.0e} (total {sample_work:.3g})", flush=True)

    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    from hwopt.executors.ray_cluster import RayExecutor
    from hwopt.executors.ray_local import LocalRayCluster

    rates = {}
    cluster = LocalRayCluster(head_cpus=1)
    try:
        with tempfile.TemporaryDirectory() as folder:
            for workers in (1, 2):
                if workers == 2:
                    cluster.add_worker(num_cpus=1)
                    cluster.cluster.wait_for_nodes()
                executor = RayExecutor(address=cluster.address)
                assert executor.slots == workers, executor.slots
                start = time.perf_counter()
                result = profile_with(executor, target, sample, Path(folder) / f"w{workers}.csv", batch=1,
                                      backend_options={"cache_dir": str(Path(folder) / f"cache{workers}")})
                seconds = time.perf_counter() - start
                assert result.measured == len(sample) and not result.failed, result
                rates[workers] = (len(sample) / seconds * 3600, sample_work / seconds * 3600)
                print(f"{workers} worker(s): {seconds:.1f} s, {rates[workers][0]:.0f} kernels/h, "
                      f"work {rates[workers][1]:.3g}/h", flush=True)
            executor.close()
    finally:
        cluster.stop()
    print(f"ratio 2 workers / 1 worker: {rates[2][0] / rates[1][0]:.2f}x")
    per_node = rates[2][1]  # a node of this machine's two cores
    for nodes in (1, 8, 64):
        hours = work_left / (per_node * nodes)
        print(f"remaining sweep on {nodes} node(s) of 2 workers: {hours:.1f} h "
              f"({len(remaining) / hours:.0f} kernels/h on average)")


if __name__ == "__main__":
    main()
