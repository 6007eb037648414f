"""Why a lowering (``prelu-to-dwconv``, ``pad-to-conv``, ``affine-to-dwconv``) pays on some Ethos-U configurations and not on
others: Vela's per-layer cycles, before and after.

    PYTHONPATH=. python -m bench.vela_lowerings [--rule prelu-to-dwconv] [-t ethos-u55-256 ...]
                                                [--real-from build/mediapipe/specs.txt] [--model PATH[:NAME=1x3xHxW] ...]

For each rule, each model with a site it takes (default models: ``build/mediapipe/specs.txt``, written by
``bench/mediapipe_exports.py``) and each target: the canonical model and the same with the rule at every
site it takes (exact; the largest relative output difference is printed) are written as int8 TFLite and
compiled whole by Vela. Prints the latency, the off-chip traffic, and the cycles (with the off-chip access
cycles among them) of the layers Vela made of the rewritten nodes before, and of the nodes that replace
them after. Vela is deterministic: one compile each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = ["ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256"]
RULES = ["prelu-to-dwconv", "pad-to-conv", "affine-to-dwconv"]


def layer_cycles(layers: list[dict], owned) -> tuple[float, float]:
    """(cycles, off-chip access cycles) of the Vela layers mapped to an ONNX node ``owned`` accepts."""
    picked = [layer for layer in layers if any(owned(node) for node in layer.get("onnx_nodes", []))]
    return sum(layer["cycles"] for layer in picked), sum(layer["offchip_access_cycles"] for layer in picked)


def main() -> int:
    from bench.decision_accuracy import read_specs
    from hwopt.analysis.sites import Analysis
    from hwopt.backends.vela import measure_model
    from hwopt.calibration.samples import random_inputs
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.errors import HwoptError
    from hwopt.io.model import InputShape
    from hwopt.rewrites import get_rule
    from hwopt.rewrites.apply import apply_steps
    from hwopt.rewrites.ruleset import RuleStep
    from hwopt.targets import load_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", action="append", default=None, choices=RULES)
    parser.add_argument("-t", "--target", action="append", default=None)
    parser.add_argument("--real-from", type=Path, default=ROOT / "build" / "mediapipe" / "specs.txt")
    parser.add_argument("--model", action="append", default=[], help="PATH[:NAME=1x3xHxW] (instead of --real-from)")
    args = parser.parse_args()
    specs = args.model or read_specs(args.real_from)
    for name in args.rule or RULES:
        step = RuleStep(name, get_rule(name).parse_params({}), [], "bench")
        print(f"\n{name}\n")
        print("| model | target | sites | Vela before -> after (ms) | change | off-chip KiB before -> after | "
              "rewritten nodes before: cycles (off-chip) | their replacement after: cycles (off-chip) |")
        print("|---|---|---|---|---|---|---|---|")
        for spec in specs:
            path, _, shape = spec.partition(":")
            original, canonical, _ = load_canonical(Path(path), [InputShape.parse(shape)] if shape else [])
            try:
                result = apply_steps(original, canonical, [step], random_inputs(original, 4, 0),
                                     random_inputs(original, 4, 1))
            except HwoptError as exc:
                print(f"| {Path(path).stem} | - | - | not rewritten: {exc} | | | | |")
                continue
            sites = Analysis(canonical).sites
            rewritten = {sites[o.site].anchor for s in result.steps for o in s.applied}
            if not rewritten:
                continue
            # The rules name their nodes after the node they replace (NAME_slope, NAME_max, NAME_conv, ...).
            replacement = {node.name for node in result.model.graph.node if node.name.rpartition("_")[0] in rewritten}
            for target_name in args.target or TARGETS:
                target = load_target(target_name)
                before, after = measure_model(canonical, target), measure_model(result.model, target)
                b_cycles, b_off = layer_cycles(before.meta["layers"], rewritten.__contains__)
                a_cycles, a_off = layer_cycles(after.meta["layers"], replacement.__contains__)
                print(f"| {Path(path).stem} | {target_name} | {len(rewritten)} | {before.latency_us / 1000:.3f} -> "
                      f"{after.latency_us / 1000:.3f} | {after.latency_us / before.latency_us - 1:+.1%} | "
                      f"{before.meta['offchip_traffic_bytes'] / 1024:.0f} -> "
                      f"{after.meta['offchip_traffic_bytes'] / 1024:.0f} | "
                      f"{b_cycles / 1e6:.2f} M ({b_off / 1e6:.2f} M) of {before.meta['cycles_total'] / 1e6:.2f} M | "
                      f"{a_cycles / 1e6:.2f} M ({a_off / 1e6:.2f} M) of {after.meta['cycles_total'] / 1e6:.2f} M |",
                      flush=True)
            if result.final is not None:
                print(f"{Path(path).stem}: exact {result.final.exact}, largest relative difference vs the original "
                      f"{result.final.worst_rel_max_abs:.1e} on 4 random inputs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
