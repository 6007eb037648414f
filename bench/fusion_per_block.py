"""Measured latency of MobileNetV2 before and after fusing its first IBN blocks, per block, on a target.

    python bench/fusion_per_block.py --target npu32 [--blocks ibn1,ibn2,ibn3]

Builds the MobileNetV2 example, fuses the blocks (linear init: weights do not
change latency), measures both models end to end with the target's model
measurer (npu32: every kernel emulated by SCALE-Sim and summed; cpu: the
model timed by onnxruntime) and each block's kernels before and after with
the target's kernel backend.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from examples.build import build_example  # noqa: E402
from hwopt.backends import get_backend, model_measurer  # noqa: E402
from hwopt.canonical.canonicalize import load_canonical  # noqa: E402
from hwopt.analysis.kernels import schedule  # noqa: E402
from hwopt.analysis.sites import Analysis  # noqa: E402
from hwopt.targets import load_target  # noqa: E402


def block_kernels(model, names: list[str], policy) -> list:
    """The kernels of ``model`` that cover any of the node ``names`` (in schedule order)."""
    return [sk.kernel for sk in schedule(model, policy).kernels if set(sk.nodes) & set(names)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="npu32")
    parser.add_argument("--blocks", default="ibn1,ibn2,ibn3")
    args = parser.parse_args()
    target = load_target(args.target)
    backend = get_backend(target)
    measure = model_measurer(target)
    with tempfile.TemporaryDirectory() as tmp:
        original_path = build_example("mobilenetv2", Path(tmp))
        fused_path = Path(tmp) / "fused.onnx"
        subprocess.run([sys.executable, "-m", "hwopt.cli", "apply", str(original_path), "-o", str(fused_path),
                        "--quiet", "--rule", f"fuse-ibn:init=linear@{args.blocks}"], check=True, cwd=ROOT)
        _, original, _ = load_canonical(original_path)
        _, fused, _ = load_canonical(fused_path)
        totals = {"original": measure(original_path, target).latency_us, "fused": measure(fused_path, target).latency_us}
    analysis = Analysis(original)
    table = Table(title=f"MobileNetV2 on {target.name}: fusing {args.blocks} (measured, microseconds)")
    for column in ("block", "shape", "before", "after", "change"):
        table.add_column(column, justify="right")
    for block_id in args.blocks.split(","):
        block = analysis.sites[block_id].target
        names = [n.name for n in (block.expand, block.depthwise, block.project, block.residual) if n is not None]
        before, after = block_kernels(original, names, target.fusion), block_kernels(fused, names, target.fusion)
        times = {m.kernel: m.latency_us for m in backend.measure(list(dict.fromkeys(before + after)))}
        a, b = sum(times[k] for k in before), sum(times[k] for k in after)
        table.add_row(block_id, block.describe(), f"{a:,.1f}", f"{b:,.1f}", f"{(b - a) / a:+.1%}")
    a, b = totals["original"], totals["fused"]
    table.add_row("whole model", "end to end", f"{a:,.1f}", f"{b:,.1f}", f"{(b - a) / a:+.1%}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
