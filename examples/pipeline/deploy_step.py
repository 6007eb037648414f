"""A pre-deployment pipeline step written in Python with hwopt's API (docs/api.md).

    python -m examples.pipeline.deploy_step MODEL.onnx [--target ethos-u55-256] [--calibration calib.npz] [--out hwopt-out]

Optimises MODEL for the target within a memory budget and the default fidelity budget, writes the model,
a report and the decisions as a rule set, and exits 0 (written), 1 (no variant fits: the deployment is
blocked, the reason printed) or 2 (bad input), as `hwopt optimize` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hwopt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--target", default=hwopt.DEFAULT_TARGET)
    parser.add_argument("--calibration", type=Path)
    parser.add_argument("--max-memory", default="8MiB")
    parser.add_argument("--out", type=Path, default=Path("hwopt-out"))
    args = parser.parse_args(argv)

    name = args.model.name.removesuffix(".onnx")
    request = hwopt.OptimizeRequest(target=args.target, max_memory=args.max_memory, calibration=args.calibration,
                                    seed=0)
    try:
        result = hwopt.optimize(args.model, request, output=args.out / f"{name}.{args.target}.onnx",
                                report=args.out / f"{name}.{args.target}.html",
                                save_rules=args.out / f"{name}.{args.target}.rules.toml")
    except hwopt.HwoptError as exc:
        print(f"hwopt: error: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        print("hwopt: blocking the deployment: " + "; ".join(result.failure), file=sys.stderr)
        return result.exit_code
    if result.output is None:  # no variant worth writing (said in the report): the original ships unchanged
        print(f"{args.model}: deploy the original on {result.target}: " + "; ".join(result.nothing_to_do))
        return 0
    best, fidelity = result.best, result.fidelity
    exact = "exact" if best["exact"] else f"{fidelity['label']} {best['fidelity']:.1%} on " \
                                            f"{fidelity['samples']['held_out']} held-out samples"
    print(f"{result.output}: {best['latency_change']:+.1%} estimated latency on {result.target} ({exact})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
