"""Adaptive refinement (nn-Meter style): measure the neighbours of the worst-predicted kernels, then retrain.

    python -m bench.refine --target npu32 [--worst 24] [--max-sim 2e7]

Worst-predicted = largest out-of-fold error (3-fold, the regressors of
``hwopt.estimator.regressor`` with a small grid) over the table's rows whose
sweep origin is a training family (``--holdout`` families are left alone, so
the held-out evaluation stays clean). Their ``hwopt.estimator.profile.neighbours`` are
measured with the target's backend and appended to the table; retrain with
``hwopt train`` afterwards.
"""

from __future__ import annotations

import argparse

import numpy as np

from hwopt.backends import get_backend
from hwopt.backends.table_file import read_table, write_table
from hwopt.backends.table_file import compact
from hwopt.estimator.features import features
from hwopt.estimator.regressor import KernelRegressor
from hwopt.estimator.train import usable
from hwopt.estimator.profile import example_names, neighbours, sweep
from hwopt.targets import load_target

GRID = {"max_depth": (5,), "learning_rate": (0.1,), "n_estimators": (150,), "min_child_weight": (1,)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="npu32")
    parser.add_argument("--worst", type=int, default=24)
    parser.add_argument("--per-kernel", type=int, default=4)
    parser.add_argument("--max-sim", type=float, default=2e7)
    parser.add_argument("--holdout", default="efficientnet_lite0,mobilenetv3_small")
    args = parser.parse_args()
    target = load_target(args.target)
    table = target.folder / "measurements.csv.gz"
    rows = usable(read_table(table))
    origins: dict = {}
    sweep(target.parallelism, origins=origins)
    train_fams = set(example_names()) - set(args.holdout.split(","))
    kernels = [r.kernel for r in rows]
    x = features(kernels, target.parallelism, target.dtype_bytes)
    y = np.array([r.latency_us for r in rows])
    kinds = [k.kind for k in kernels]
    folds = np.random.default_rng(0).permutation(len(rows)) % 3
    oof = np.empty(len(rows))
    for fold in range(3):
        tr, te = folds != fold, folds == fold
        model = KernelRegressor.fit(x[tr], [k for k, t in zip(kinds, tr) if t], y[tr], grid=GRID)
        known = np.array([k in model.kinds for k in kinds]) & te
        oof[te] = np.nan
        oof[known] = model.predict(x[known], [k for k, m in zip(kinds, known) if m])
    error = np.abs(np.log(oof / y))
    eligible = [i for i in np.argsort(-np.nan_to_num(error, nan=-1))
                if kernels[i] in origins and origins[kernels[i]] & train_fams]
    worst = [kernels[i] for i in eligible[:args.worst]]
    print(f"out-of-fold median |log error| {np.nanmedian(error):.4f}; worst {args.worst}: "
          + ", ".join(f"{kernels[i].describe()} ({error[i]:.2f})" for i in eligible[:5]))
    candidates = neighbours(worst, target.parallelism, per_kernel=args.per_kernel, exclude=kernels)
    if target.backend == "scalesim":
        from hwopt.backends.scalesim import simulation_cost as cost

        candidates = [k for k in candidates if cost(k) <= args.max_sim]
    print(f"measuring {len(candidates)} neighbours")
    backend = get_backend(target)
    for i in range(0, len(candidates), 32):
        write_table(table, backend.measure(candidates[i:i + 32]), append=True)
        print(f"  {min(i + 32, len(candidates))}/{len(candidates)}", flush=True)
    compact(table)


if __name__ == "__main__":
    main()
