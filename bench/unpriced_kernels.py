"""Kernels the schedule prices that Vela gives no cycles: how far the target's schedule is from Vela's.

    PYTHONPATH=. python -m bench.unpriced_kernels -t ethos-u55-256 [-t ...] --real-from build/setE/specs.txt [...]

Each real export is compiled whole by Vela (cached) and its per-layer report given to the scheduled kernels
(``hwopt.backends.vela_context.model_in_context``). A kernel left with no cycles is one Vela fused,
chained or merged into another op (or a row the attribution misplaced): the estimator prices it on its
own, so each is a place where the schedule disagrees with Vela. Prints, per model, the count by kernel
kind and op, and the total per target. No estimator is run.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path


def unpriced(path: Path, shapes: list[str], target) -> tuple[int, collections.Counter]:
    """(kernels, Counter of 'kind(op+act)' of the kernels with no cycles of their own)."""
    from hwopt.backends.vela_context import model_in_context
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.io.model import InputShape

    _, canonical, _ = load_canonical(path, [InputShape.parse(s) for s in shapes])
    found = model_in_context(canonical, target)
    zero = [k for k in found.kernels if k.kernel.kind != "view" and k.latency_us == 0.0]
    return len(found.kernels), collections.Counter(
        f"{k.kernel.kind}({k.kernel.op}{'+' + k.kernel.act if k.kernel.act else ''})" for k in zero)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--target", action="append", required=True)
    parser.add_argument("--real-from", action="append", default=[], type=Path, metavar="SPECS")
    args = parser.parse_args()
    from bench.decision_accuracy import read_specs, real_models
    from hwopt.targets import load_target

    models = real_models(read_specs(*args.real_from), bundled=False)
    for name in args.target:
        target = load_target(name)
        total: collections.Counter = collections.Counter()
        for label, path, shapes in models:
            kernels, zero = unpriced(path, shapes, target)
            total.update(zero)
            print(f"{name} {label:55s} {kernels:4d} kernels, {sum(zero.values()):3d} unpriced {dict(zero)}", flush=True)
        print(f"{name}: {sum(total.values())} unpriced kernels in {len(models)} models: {dict(total.most_common())}",
              flush=True)


if __name__ == "__main__":
    main()
