"""Where an estimate misses a real export, kernel by kernel: the estimator's price beside Vela's in-model figure.

    PYTHONPATH=. python -m bench.kernel_misses -t ethos-u55-256 [-t ...] --real-from build/setF/specs.txt [--top 8]

For each export (canonical form, as hwopt estimates it) and target: the whole-model estimate against Vela, then
the kernels whose estimate is furthest from what Vela's per-layer report gives them in the model
(``hwopt.backends.vela_context.model_in_context``), grouped by descriptor (a model repeats blocks), with the
share of the miss each group makes. Run it on an export only after its unseen estimate is on record: it
reads where the estimator is wrong, which is how the next corpus family is chosen.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path


def misses(path: Path, shapes: list[str], estimator, target, top: int) -> str:
    from hwopt.analysis.kernels import schedule
    from hwopt.backends.vela_context import model_in_context
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.io.model import InputShape

    _, canonical, _ = load_canonical(path, [InputShape.parse(s) for s in shapes])
    found = model_in_context(canonical, target)
    sched = schedule(canonical, target.fusion)
    predicted = estimator.predict([sk.kernel for sk in sched.kernels], True)
    by_first = {sk.nodes[0]: float(p) for sk, p in zip(sched.kernels, predicted)}
    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for k in found.kernels:
        g = groups[k.kernel.describe()]
        g[0] += by_first.get(k.nodes[0], 0.0)
        g[1] += k.latency_us
        g[2] += 1
    est, vela = sum(g[0] for g in groups.values()), found.latency_us
    lines = [f"  estimate {est / 1000:.3f} ms, Vela {vela / 1000:.3f} ms ({est / vela - 1:+.1%}); "
             f"largest misses (estimate - Vela, count, descriptor):"]
    for name, (e, v, n) in sorted(groups.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))[:top]:
        lines.append(f"    {(e - v) / 1000:+9.3f} ms  ({e / 1000:8.3f} vs {v / 1000:8.3f})  x{n:<3d} {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--target", action="append", required=True)
    parser.add_argument("--real-from", action="append", default=[], type=Path, metavar="SPECS")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--match", default="", help="only exports whose label contains this")
    args = parser.parse_args()
    from bench.decision_accuracy import read_specs, real_models
    from hwopt.estimator.estimator import load_estimator
    from hwopt.targets import load_target

    models = [m for m in real_models(read_specs(*args.real_from), bundled=False) if args.match in m[0]]
    for name in args.target:
        target, estimator = load_target(name), load_estimator(name, allow_fallback=True)
        for label, path, shapes in models:
            print(f"{name} {label}\n{misses(path, shapes, estimator, target, args.top)}", flush=True)


if __name__ == "__main__":
    main()
