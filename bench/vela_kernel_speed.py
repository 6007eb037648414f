"""Per-kernel Vela compile time: a new Python process per kernel vs the long-lived worker (vela_worker).

    PYTHONPATH=. python -m bench.vela_kernel_speed [-t ethos-u55-256] [--count 24]

The first ``--count`` kernels of the target's sweep are written as int8 TFLite once, then compiled
with the cache off, first each in its own subprocess, then all in one worker; prints the mean wall
time per kernel of each and checks that both give the same cycles (Vela is deterministic).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from hwopt.backends.kernel_models import kernel_model
from hwopt.backends.vela import VelaSettings, compile_tflite
from hwopt.errors import HwoptError
from hwopt.estimator.profile import sweep
from hwopt.targets import load_target
from hwopt.tflite.writer import write_tflite


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-t", "--target", default="ethos-u55-256")
    parser.add_argument("--count", type=int, default=24)
    args = parser.parse_args()
    target = load_target(args.target)
    base = dataclasses.replace(VelaSettings.from_target(target), cache=False)
    kernels = [k for k in sweep(target.parallelism) if k.kind != "view"]
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, kernel in enumerate(kernels):
            if len(paths) == args.count:
                break
            try:
                paths.append(write_tflite(kernel_model(kernel), Path(folder) / f"k{i}.tflite").path)
            except HwoptError:
                continue  # an op the writer has no converter for (LayerNormalization): not a Vela kernel
        figures = {}
        for label, worker in (("subprocess", False), ("worker", True)):
            settings = dataclasses.replace(base, worker=worker)
            start = time.perf_counter()
            figures[label] = [compile_tflite(p, settings, name=f"k{i}").cycles_total for i, p in enumerate(paths)]
            per = (time.perf_counter() - start) / len(paths)
            print(f"{label:10s} {per * 1000:7.0f} ms per kernel ({len(paths)} kernels, {args.target})")
    same = figures["subprocess"] == figures["worker"]
    print(f"same cycles: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
