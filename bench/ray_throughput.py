"""Kernels per hour through the Ray executor with 1 and 2 worker nodes on this machine, in one run.

A Ray cluster on 127.0.0.1 (a one-CPU head, then one more one-CPU node)
profiles the same npu32 kernels twice, each time into a fresh emulator cache
(so SCALE-Sim really runs): once with only the head, once with both nodes.
The kernels are drawn from the npu32 sweep kernels the shipped table lacks,
spread evenly in log scale over a band of emulation work (``simulation_cost``:
padded ifmap h*w x channels x filters). Prints kernels/h for 1 and 2 workers
and their ratio. The one-worker pass runs its tasks one after another, so the
gaps between completions are per-kernel times: a least-squares fit of
seconds = a + b x work over them, summed over the remaining sweep kernels and
divided by the workers (at the measured two-worker efficiency), gives the
remaining sweep's cost on 1, 8 and 64 nodes of two workers each, which
``docs/cluster.md`` quotes.

    nice -n 10 python -m bench.ray_throughput [--kernels 12] [--min-work 1e5] [--max-work 5e7]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from hwopt.backends.table_file import read_table
from hwopt.backends.scalesim import simulation_cost
from hwopt.estimator.profile import profile_with, sweep
from hwopt.targets import load_target

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernels", type=int, default=12)
    parser.add_argument("--min-work", type=float, default=1e5)
    parser.add_argument("--max-work", type=float, default=5e7)
    parser.add_argument("--skip", type=Path, action="append", default=[],
                        help="also count kernels in this table as done (e.g. a separate sweep table)")
    args = parser.parse_args()
    target = load_target("npu32")
    done = {m.kernel for table in [REPO / "estimator/npu32/measurements.csv.gz", *args.skip]
            if table.exists() for m in read_table(table)}
    remaining = [k for k in sweep(target.parallelism) if k not in done]
    work_left = sum(simulation_cost(k) for k in remaining)
    band = sorted((k for k in remaining if args.min_work <= simulation_cost(k) <= args.max_work), key=simulation_cost)
    targets = np.geomspace(args.min_work, args.max_work, args.kernels)
    sample = list(dict.fromkeys(min(band, key=lambda k: abs(np.log(simulation_cost(k) / t))) for t in targets))
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
                stamps: list[float] = []
                table = Path(folder) / f"w{workers}.csv"
                result = profile_with(executor, target, sample, table, batch=1,
                                      backend_options={"cache_dir": str(Path(folder) / f"cache{workers}")},
                                      progress=lambda label, done, total: stamps.append(time.perf_counter()))
                seconds = time.perf_counter() - start
                if workers == 1:  # one task at a time: completion gaps are per-kernel times, rows in that order
                    work = np.array([simulation_cost(m.kernel) for m in read_table(table)])
                    times = np.diff(stamps)
                    (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(work), work], 1), times, rcond=None)
                    print(f"per kernel: {a:.2f} s + {b * 1e8:.1f} s per 1e8 work (fit over {len(work)} kernels)",
                          flush=True)
                assert result.measured == len(sample) and not result.failed, result
                rates[workers] = (len(sample) / seconds * 3600, sample_work / seconds * 3600)
                print(f"{workers} worker(s): {seconds:.1f} s, {rates[workers][0]:.0f} kernels/h", flush=True)
            executor.close()
    finally:
        cluster.stop()
    print(f"ratio 2 workers / 1 worker: {rates[2][0] / rates[1][0]:.2f}x", flush=True)
    ratio = rates[2][0] / rates[1][0]
    one_worker_hours = sum(max(a, 0.0) + b * simulation_cost(k) for k in remaining) / 3600
    for nodes in (1, 8, 64):
        hours = one_worker_hours / (ratio * nodes)  # two workers per node, at the measured 2-worker speed-up
        print(f"remaining sweep ({len(remaining)} kernels) on {nodes} node(s) of 2 workers: {hours:.1f} h "
              f"({len(remaining) / hours:.0f} kernels/h on average)")


if __name__ == "__main__":
    main()
