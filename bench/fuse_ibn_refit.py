"""fuse-ibn weight refit vs its baselines on MobileNetV2's first three expandable blocks.

    python bench/fuse_ibn_refit.py [--samples 512] [--eval 32] [--blocks ibn1,ibn2,ibn3]
                                   [--model other.onnx [--input-shape NAME=1x3x224x224]]

Fuses the blocks four ways -- least squares with the project conv refit (the
default), least squares alone, the linear composition of the two kernels
that ignores the activation, and a random init -- and prints each block's
output cosine similarity and the final output's, against the original model,
on held-out random inputs. Also prints what the original's own per-output
mean over the held-out samples (one constant output for every input) scores:
on the random-weight examples most of the final output's energy is that mean,
so the final cosine mostly measures how well the rewrite keeps the activation
statistics the later (BatchNorm-calibrated) layers expect.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from examples.build import build_example  # noqa: E402
from hwopt.rewrites.apply import apply_steps  # noqa: E402
from hwopt.calibration.samples import OrtRunner, random_inputs  # noqa: E402
from hwopt.fidelity.verify import compare_outputs  # noqa: E402
from hwopt.canonical.canonicalize import load_canonical  # noqa: E402
from hwopt.io.model import InputShape  # noqa: E402
from hwopt.rewrites.ruleset import parse_rule_option  # noqa: E402

VARIANTS = {
    "least squares + project refit": "init=lstsq,project=refit",
    "least squares": "init=lstsq,project=keep",
    "linear composition": "init=linear",
    "random init": "init=random",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512, help="calibration samples")
    parser.add_argument("--eval", type=int, default=32, help="held-out evaluation samples")
    parser.add_argument("--blocks", default="ibn1,ibn2,ibn3")
    parser.add_argument("--model", type=Path, help="another model than the MobileNetV2 example")
    parser.add_argument("--input-shape", action="append", default=[], help="NAME=1x3x224x224 for --model")
    args = parser.parse_args()
    shapes = [InputShape.parse(text) for text in args.input_shape]
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or build_example("mobilenetv2", Path(tmp))
        original, canonical, _ = load_canonical(path, shapes)
    calibration = random_inputs(original, args.samples, seed=0)
    evaluation = random_inputs(original, args.eval, seed=1)
    blocks = args.blocks.split(",")
    name = args.model.name if args.model else "the MobileNetV2 example"
    table = Table(title=f"fuse-ibn on {name} {args.blocks}: cosine similarity to the original "
                        f"({args.samples} calibration, {args.eval} held-out samples)")
    table.add_column("weights")
    for block in blocks:
        table.add_column(f"{block} output", justify="right")
    table.add_column("final output", justify="right")
    table.add_column("final rel L2", justify="right")
    table.add_column("seconds", justify="right")
    for label, params in VARIANTS.items():
        start = time.perf_counter()
        step = parse_rule_option(f"fuse-ibn:{params}@{args.blocks}")
        result = apply_steps(original, canonical, [step], calibration, evaluation)
        seconds = time.perf_counter() - start
        cosines = [f"{o.figures['block_cosine']:.4f}" for o in result.steps[0].applied]
        final = result.final.outputs[0]
        table.add_row(label, *cosines, f"{final.cosine:.4f}", f"{final.rel_l2:.3f}", f"{seconds:.1f}")
    Console().print(table)
    reference = OrtRunner(original).run_all(evaluation)
    constant = {name: np.broadcast_to(value.mean(axis=0), value.shape) for name, value in reference.items()}
    floor = compare_outputs(reference, constant).outputs[0]
    print(f"the original's mean output over the {args.eval} held-out samples, for every input: final cosine "
          f"{floor.cosine:.4f}, rel L2 {floor.rel_l2:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
