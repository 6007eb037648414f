"""Wall time of `hwopt apply` with all four rules on the MobileNetV2 example (the CLI, as a user runs it).

    python bench/apply_speed.py [--repeat 3]

Rules: fuse-ibn on ibn1-ibn3, depth-multiplier 0.75 on ibn8, dw-to-dense on
dw10, align-channels pad to 32 everywhere; default calibration (64 random
samples) and verification. Prints each run's seconds and the median.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.build import build_example  # noqa: E402

RULES = ["fuse-ibn@ibn1,ibn2,ibn3", "depth-multiplier:ratio=0.75@ibn8", "dw-to-dense@dw10",
         "align-channels:p=32,mode=pad"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_example("mobilenetv2", Path(tmp))
        command = [sys.executable, "-m", "hwopt.cli", "apply", str(model), "-o", str(Path(tmp) / "out.onnx"),
                   "--quiet"]
        for rule in RULES:
            command += ["--rule", rule]
        times = []
        for run in range(args.repeat):
            start = time.perf_counter()
            subprocess.run(command, check=True, cwd=ROOT)
            times.append(time.perf_counter() - start)
            print(f"run {run + 1}: {times[-1]:.1f} s", flush=True)
    print(f"hwopt apply, MobileNetV2, all four rules: median {statistics.median(times):.1f} s "
          f"over {len(times)} runs (limit 30 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
