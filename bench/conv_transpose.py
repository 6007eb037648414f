"""ConvTranspose on both targets: real exports estimated and measured (npu32 emulated, cpu timed).

    python -m bench.conv_transpose [--size 320] [--out build/conv_transpose] [--no-measure]

Models:

- ``tests/data/torch_unet_db_head_convtranspose.onnx``: a torch export with five
  ConvTransposes (2x2/2, 4x4/2 pad 1, depthwise 4x4/2, a DBNet head; how it was
  made: tests/data/README.md);
- PaddleOCR's PP-OCRv4 text detector (DBNet: two 2x2 stride-2 ConvTransposes
  in its head), as the PyPI wheel ``rapidocr-onnxruntime`` 1.4.4 ships it
  (``rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx``, paddle2onnx),
  downloaded at bench time into ``OUT/wheels`` and read from the wheel, at
  input ``x=1x3xSIZExSIZE``.

For each model and target (npu32, cpu) it prints the estimate (``hwopt
estimate``), the ConvTranspose kernels as the schedule describes them (their
sub-pixel convs, docs/estimator.md) and, unless ``--no-measure``, the
measurement (``hwopt measure``: npu32 emulates every conv with SCALE-Sim, a
cold cache takes minutes for the detector; cpu is onnxruntime end to end, so
take cpu figures on a quiet machine) and, on cpu, the layout conversions
predicted beside those onnxruntime runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.trained_case import log, wheel_file
from hwopt.backends import model_measurer
from hwopt.backends.ort_cpu import TimingSettings, model_conversions
from hwopt.canonical.canonicalize import load_canonical
from hwopt.estimator import load_estimator
from hwopt.analysis.layout import reorder_bytes
from hwopt.io.model import InputShape

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "torch_unet_db_head_convtranspose.onnx"
OCR = ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx")


def detector(out: Path) -> Path:
    return wheel_file(*OCR, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320, help="the detector's input side")
    parser.add_argument("--out", type=Path, default=Path("build/conv_transpose"))
    parser.add_argument("--no-measure", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = [(FIXTURE, []), (detector(args.out), [InputShape.parse(f"x=1x3x{args.size}x{args.size}")])]
    for path, shapes in models:
        _, canonical, _ = load_canonical(path, shapes)
        for target_name in ("npu32", "cpu"):
            estimator = load_estimator(target_name)
            target = estimator.target
            sched = estimator.schedule_of(canonical)
            estimate = estimator.estimate(sched)
            line = f"{path.name} on {target_name}: estimate {estimate.latency_us / 1000:.3f} ms"
            for kernel in estimate.per_kernel:
                if "[ConvTranspose]" in kernel.description:
                    print(f"  {kernel.description:50s} {kernel.latency_us:9.2f} us  {kernel.nodes[0]}")
            if target.fusion.blocked_layout:
                predicted = sum(reorder_bytes(sk.kernel)[0] for sk in sched.kernels)
                run = model_conversions(canonical, TimingSettings.from_target(target))
                line += f", layout conversions predicted {predicted}, onnxruntime {run.count}"
            if not args.no_measure:
                log(f"measuring {path.name} on {target_name}")
                measured = model_measurer(target)(canonical, target).latency_us
                line += f", measured {measured / 1000:.3f} ms ({estimate.latency_us / measured - 1:+.1%})"
            print(line, flush=True)


if __name__ == "__main__":
    main()
