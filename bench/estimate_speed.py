"""How long the estimator takes per model after start-up: predict + sum (and schedule) on a real model.

    python -m bench.estimate_speed [--target cpu] [--model ssdlite_mobilenetv2 | path.onnx]

Measured 2026-11-25 on a torchvision ResNet-152 (legacy export, 209 kernels):
estimate cold 5.0 ms (npu32) / 3.6 ms (cpu), warm 1.0 ms, schedule 19 ms
(87 ms before the schedule stopped loading every conv's weights for their shape).

Times, best of 5, on a fresh estimator (cold prediction cache: every kernel a
miss, scored in one vectorised batch) and warm (every kernel cached, what the
search pays for a variant sharing kernels). Excludes Python start-up, model
loading and canonicalisation; the schedule (cutting the canonical model into
kernels) is timed separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from examples.build import build_example
from hwopt.canonical.canonicalize import canonicalize
from hwopt.estimator import load_estimator
from hwopt.analysis.kernels import schedule
from hwopt.io.model import load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--model", default="ssdlite_mobilenetv2")
    args = parser.parse_args()
    # An example's name, or the path of any ONNX file (e.g. tests/data's real exports).
    path = Path(args.model) if args.model.endswith(".onnx") else build_example(args.model, Path(tempfile.mkdtemp()))
    canonical, _ = canonicalize(load_model(path), verify=False)
    est = load_estimator(args.target)
    sched_times, cold, warm = [], [], []
    for _ in range(5):
        start = time.perf_counter()
        sched = schedule(canonical, est.target.fusion)
        sched_times.append(time.perf_counter() - start)
        fresh = load_estimator(args.target)
        start = time.perf_counter()
        fresh.estimate(sched)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        fresh.estimate(sched)
        warm.append(time.perf_counter() - start)
    print(f"{args.model} on {args.target}: {len(sched.kernels)} kernels; estimate (predict + sum + memory) "
          f"cold {min(cold) * 1000:.1f} ms, warm {min(warm) * 1000:.1f} ms; schedule {min(sched_times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
