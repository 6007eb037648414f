"""Recovery on the trained case: top-1 agreement before and after, at measured npu32 latency.

    python -m bench.recover_figures [--case build/trained_case] [--budget 10m] [--threads 1]
                                    [--out build/recover_figures] [--only a|b]

Needs the trained case (``python -m bench.trained_case``: a pretrained
EfficientNet-Lite0 and real photos split by photo into calib.npz/heldout.npz).
Two architectures, each written by hwopt from the original with the calibration
crops, then recovered with ``hwopt recover`` on the calibration crops only and
judged on the held-out photos' crops (never trained on):

- (a) fuse-ibn on the first three fusable IBN blocks (ibn1-ibn3);
- (b) the fastest architecture hwopt's search finds on npu32 (``hwopt optimize
  -t npu32``, with ``--for-retraining`` where the CLI has it): half the hidden
  width of every IBN block, ten blocks fused, three block outputs trimmed to a
  multiple of 32 (estimated -61%). fuse-ibn alone on those ten blocks is only
  -26% estimated: the width cuts are what reach -45%.

Latencies are ``hwopt measure -t npu32`` (the SCALE-Sim emulator, kernel by
kernel), not estimates. Every command runs under ``nice -n 10`` with one torch
thread: the machine these figures come from is shared (2 cores, several other
jobs), so the recovery budget buys fewer epochs than it would on an idle
machine; the epochs done are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def hwopt(*args: str) -> subprocess.CompletedProcess:
    command = ["nice", "-n", "10", sys.executable, "-m", "hwopt.cli", *args]
    print("$ hwopt " + " ".join(args), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    if done.returncode not in (0, 1):
        raise SystemExit(f"hwopt {args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


def npu32_ms(model: Path) -> float:
    return json.loads(hwopt("measure", str(model), "-t", "npu32", "--json").stdout)["latency_us"] / 1000


def fast_variant(case: Path, out: Path) -> Path:
    """The search's fastest architecture on npu32, written from the original (rules in OUT/fast.toml)."""
    path, rules = out / "fast.onnx", out / "fast.toml"
    if not path.exists():
        extra = ["--for-retraining"] if "--for-retraining" in hwopt("optimize", "--help").stdout else []
        hwopt("optimize", str(case / "efficientnet_lite0.onnx"), "-t", "npu32", "--calibration",
              str(case / "calib.npz"), "-o", str(path), "--save-rules", str(rules), "-q", *extra)
    return path


def first_blocks(case: Path, out: Path) -> Path:
    path = out / "fuse3.onnx"
    if not path.exists():
        hwopt("apply", str(case / "efficientnet_lite0.onnx"), "-o", str(path), "--rule", "fuse-ibn@ibn1,ibn2,ibn3",
              "--calibration", str(case / "calib.npz"), "-q")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recover_figures", description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=ROOT / "build" / "trained_case")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "recover_figures")
    parser.add_argument("--budget", default="10m", help="recovery time budget per architecture")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--only", choices=("a", "b"), help="one architecture only")
    args = parser.parse_args(argv)
    original = args.case / "efficientnet_lite0.onnx"
    if not original.exists():
        raise SystemExit(f"{original}: missing; build the case first: python -m bench.trained_case")
    args.out.mkdir(parents=True, exist_ok=True)
    variants = {"a": ("fuse-ibn ibn1-ibn3", first_blocks), "b": ("fastest found (npu32)", fast_variant)}
    base_ms = npu32_ms(original)
    print(f"original: npu32 {base_ms:.3f} ms (measured)", flush=True)
    rows = []
    for key, (label, build) in variants.items():
        if args.only and key != args.only:
            continue
        rewritten = build(args.case, args.out)
        recovered = args.out / f"{rewritten.stem}.recovered.onnx"
        done = hwopt("recover", str(original), str(rewritten), "--calibration", str(args.case / "calib.npz"),
                     "--heldout", str(args.case / "heldout.npz"), "-o", str(recovered), "--recover-time", args.budget,
                     "--threads", args.threads, "--seed", "0", "--json")
        figures = json.loads(done.stdout)
        ms = npu32_ms(recovered)
        row = {"variant": label, "npu32_ms": ms, "latency_change": ms / base_ms - 1, **figures}
        rows.append(row)
        print(f"({key}) {label}: npu32 {ms:.3f} ms ({ms / base_ms - 1:+.1%} vs {base_ms:.3f} ms), held-out top-1 "
              f"agreement {figures['before']:.1%} -> {figures['after']:.1%} ({figures['held_out_samples']} crops of "
              f"held-out photos; {len(figures['epochs'])} epochs in {figures['seconds']:.0f} s, "
              f"blocks {', '.join(figures['blocks']) or 'none'})", flush=True)
    name = f"figures-{args.only}.json" if args.only else "figures.json"
    (args.out / name).write_text(json.dumps({"original_npu32_ms": base_ms, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
