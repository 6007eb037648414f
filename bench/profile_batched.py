"""Measure a target's sweep in batches (resumable): the same rows as ``hwopt profile``, faster on npu32.

``hwopt profile`` hands the backend one kernel at a time (so an interruption
loses at most one kernel); on npu32 that runs one SCALE-Sim worker process per
kernel, serially, ~5 s each. Here each call measures ``--batch`` kernels, so
the backend's two workers run in parallel and each process simulates several
layers: an interruption loses at most one batch. Rows land in the same table.

    python -m bench.profile_batched --target npu32 -o estimator/npu32/measurements.csv.gz [--count N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from hwopt.backends import get_backend
from hwopt.backends.table_file import write_table
from hwopt.backends.table_file import compact, done_kernels
from hwopt.estimator.profile import sweep
from hwopt.targets import load_target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="npu32")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-sim", type=float, default=None,
                        help="skip array kernels whose SCALE-Sim layer is larger than this (ifmap h*w*C*filters)")
    parser.add_argument("--min-sim", type=float, default=None, help="skip kernels whose layer is smaller")
    parser.add_argument("--families", default=None,
                        help="only kernels derived from these example models (comma-separated)")
    parser.add_argument("--kinds", default=None, help="only these kernel kinds (comma-separated)")
    parser.add_argument("--sample", type=int, default=None,
                        help="measure N kernels spread evenly over the cost range (after the filters)")
    args = parser.parse_args()
    target = load_target(args.target)
    backend = get_backend(target)
    origins: dict = {}
    kernels = sweep(target.parallelism, count=args.count, origins=origins)
    if args.families:
        wanted = set(args.families.split(","))
        kernels = [k for k in kernels if origins[k] & wanted]
    if args.kinds:
        kernels = [k for k in kernels if k.kind in args.kinds.split(",")]
    done = done_kernels(args.output)
    todo = [k for k in kernels if k not in done]
    if target.backend == "scalesim":
        # Cheapest first (SCALE-Sim time grows with the layer): whatever finishes in the time there is
        # covers the most configurations; --max-sim caps it.
        from hwopt.backends.scalesim import simulation_cost as cost

        todo = sorted((k for k in todo if (args.max_sim is None or cost(k) <= args.max_sim)
                       and (args.min_sim is None or cost(k) >= args.min_sim)), key=cost)
    if args.sample is not None and len(todo) > args.sample:
        todo = [todo[int(i)] for i in np.linspace(0, len(todo) - 1, args.sample)]
    start = time.time()
    for i in range(0, len(todo), args.batch):
        chunk = todo[i:i + args.batch]
        write_table(args.output, backend.measure(chunk), append=True)
        print(f"{i + len(chunk)}/{len(todo)} in {time.time() - start:.0f} s", flush=True)
    if todo and args.output.suffix == ".gz":
        compact(args.output)


if __name__ == "__main__":
    main()
