"""How many variants per second the search scores (kernel tables, no ONNX per variant).

    python -m bench.search_speed [--model mobilenetv2] [--target npu32] [--cost auto] [--rules rules/default.toml]

Builds the example model, its search space and kernel tables once (the cost
model predicts every distinct kernel of the space: with the emulator on a cold
cache that step simulates them), then times, on one thread:

- batched scoring of random variants (latency, params, FLOPs, peak memory);
- the evolutionary strategy end to end (selection, crossover, mutation, scoring);
- one variant at a time (``VariantModel.score``), for reference.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from examples.build import build_example  # noqa: E402
from hwopt.canonical.canonicalize import load_canonical  # noqa: E402
from hwopt.search.config import default_rules_path, load_search_file  # noqa: E402
from hwopt.search.cost import make_cost_model  # noqa: E402
from hwopt.search.objective import Budgets, Objective  # noqa: E402
from hwopt.search.space import build_space  # noqa: E402
from hwopt.search.strategies import Problem, evolutionary  # noqa: E402
from hwopt.search.variants import VariantModel  # noqa: E402
from hwopt.analysis.sites import Analysis  # noqa: E402
from hwopt.targets import load_target  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--target", default="npu32")
    parser.add_argument("--cost", default="auto")
    parser.add_argument("--rules", type=Path, default=None)
    parser.add_argument("--variants", type=int, default=200_000)
    args = parser.parse_args()
    target = load_target(args.target)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_example(args.model, Path(tmp))
        _, canonical, _ = load_canonical(path)
    analysis = Analysis(canonical)
    space = build_space(analysis, load_search_file(args.rules or default_rules_path()), target.parallelism)
    cost = make_cost_model(args.cost, target)
    start = time.perf_counter()
    vm = VariantModel(analysis, space, target.fusion, target.dtype_bytes, cost)
    tables = time.perf_counter() - start
    print(f"{args.model} on {target.name}: {len(vm.slots)} kernels, {len(space.variables)} decisions, "
          f"{space.size:.3g} variants, {vm.distinct_kernels} distinct kernels predicted in {tables:.2f} s "
          f"({cost.name})")
    rng = np.random.default_rng(0)
    batch = 4096
    rows = np.stack([rng.integers(0, v.size, args.variants) for v in space.variables], axis=1)
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        vm.evaluate(rows[i:i + batch])
    seconds = time.perf_counter() - start
    print(f"batched scoring:      {len(rows) / seconds:12,.0f} variants/s ({len(rows):,} in {seconds:.2f} s)")
    problem = Problem(space, vm, Objective(Budgets()), seed=0)
    start = time.perf_counter()
    evolutionary(problem)
    seconds = time.perf_counter() - start
    print(f"evolutionary search:  {problem.evaluated / seconds:12,.0f} variants/s "
          f"({problem.evaluated:,} in {seconds:.2f} s)")
    start = time.perf_counter()
    count = 2000
    for row in rows[:count]:
        vm.score(tuple(int(x) for x in row))
    seconds = time.perf_counter() - start
    print(f"one at a time:        {count / seconds:12,.0f} variants/s")


if __name__ == "__main__":
    main()
