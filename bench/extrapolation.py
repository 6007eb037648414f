"""Extrapolation: trained only on the smaller kernels of a target's table, scored on the larger ones.

    python -m bench.extrapolation --target npu32 [--cut 0.8] [--kinds conv,dwconv,gemm,gconv] [--ridge-only]

Kernels are ordered by the analytic prior (``features`` column ``log_prior``:
the array's fold cycles, or the vector unit's work); an estimator is trained
(``hwopt.estimator.train``) on the rows below the ``--cut`` quantile and scored
on the rows above it, beside two one-parameter baselines fitted on the same
rows: latency = c x FLOPs, and latency = c x prior per kind (the prior alone).
``--ridge-only`` trains without the offset base (the estimator as it was
before the prior became a base) for comparison. The search scores kernels
larger than any in the table (a dense conv where a depthwise one was, a fused
block at full resolution): this is how far the estimator can be trusted there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwopt.backends.table_file import read_table  # noqa: E402
from hwopt.estimator import regressor  # noqa: E402
from hwopt.estimator.estimator import load_estimator  # noqa: E402
from hwopt.estimator.features import FEATURES, features  # noqa: E402
from hwopt.estimator.train import train_estimator, usable  # noqa: E402
from hwopt.targets import load_target  # noqa: E402


def scores(pred: np.ndarray, true: np.ndarray) -> dict:
    err = np.abs(pred / true - 1)
    return {"median_abs_error_pct": float(np.median(err) * 100), "within_10pct": float(np.mean(err <= 0.10)),
            "within_25pct": float(np.mean(err <= 0.25))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="npu32")
    parser.add_argument("--table", type=Path, default=None)
    parser.add_argument("--cut", type=float, default=0.8, help="train below this quantile of the prior")
    parser.add_argument("--kinds", default="conv,dwconv,gconv,gemm", help="kinds scored above the cut")
    parser.add_argument("--ridge-only", action="store_true", help="without the offset base (as before)")
    parser.add_argument("--worst", type=int, default=0, help="print the worst kernels")
    args = parser.parse_args()
    target = load_target(args.target)
    rows = usable(read_table(args.table or target.folder / "measurements.csv.gz"))
    x = features([r.kernel for r in rows], target.parallelism, target.dtype_bytes)
    prior = x[:, FEATURES.index("log_prior")]
    cut = np.quantile(prior, args.cut)
    train = [r for r, s in zip(rows, prior) if s <= cut]
    kinds = set(args.kinds.split(","))
    test = [r for r, s in zip(rows, prior) if s > cut and r.kernel.kind in kinds]
    if args.ridge_only:
        regressor.BASES = tuple(b for b in regressor.BASES if b[1] is None)
    with tempfile.TemporaryDirectory() as folder:
        train_estimator(train, target, folder, source="below the cut")
        est = load_estimator(target, folder)
        pred = est.predict([r.kernel for r in test], isolated=True)
    true = np.array([r.latency_us for r in test])
    lat = np.array([r.latency_us for r in train])
    flops = np.array([r.kernel.flops for r in train], dtype=float)
    c = float((flops * lat).sum() / (flops ** 2).sum())
    base_flops = np.array([r.kernel.flops for r in test], dtype=float) * c
    # The prior alone: one constant per kind (least squares in log space), fitted below the cut.
    tr_prior = np.exp(prior[[s <= cut for s in prior]])
    te_prior = np.exp(np.array([s for r, s in zip(rows, prior) if s > cut and r.kernel.kind in kinds]))
    per_kind = {}
    for kind in kinds:
        mask = np.array([r.kernel.kind == kind for r in train])
        if mask.any():
            per_kind[kind] = float(np.exp(np.mean(np.log(lat[mask]) - np.log(tr_prior[mask]))))
    base_prior = np.array([per_kind.get(r.kernel.kind, np.nan) for r in test]) * te_prior
    largest_train = float(np.exp(cut))
    print(f"[{target.name}] {len(train)} training rows (prior <= {largest_train:.3g} cycles), "
          f"{len(test)} scored above ({', '.join(sorted(kinds))}; up to {te_prior.max() / largest_train:.1f}x the cut)"
          + (" [ridge bases only]" if args.ridge_only else ""))
    for name, p in (("estimator", pred), ("FLOPs baseline", base_flops), ("prior alone", base_prior)):
        s = scores(p, true)
        print(f"  {name:16s} median |error| {s['median_abs_error_pct']:5.1f}%  "
              f"within 10% {100 * s['within_10pct']:4.0f}%"
              f"  within 25% {100 * s['within_25pct']:4.0f}%  mean signed {100 * np.mean(p / true - 1):+5.1f}%")
    if args.worst:
        err = pred / true - 1
        for i in np.argsort(-np.abs(err))[:args.worst]:
            print(f"    {test[i].kernel.describe():45s} measured {true[i]:9.1f} us  estimator {100 * err[i]:+6.1f}%  "
                  f"prior alone {100 * (base_prior[i] / true[i] - 1):+6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
