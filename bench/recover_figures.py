"""Recovery on the trained case: top-1 agreement before and after, at measured npu32 latency.

    python -m bench.recover_figures [--case build/trained_case] [--budget 10m] [--threads 1]
                                    [--out build/recover_figures] [--only g46,g50,a20,b45,fuse3,fastest]

Needs the trained case (``python -m bench.trained_case``: a pretrained
EfficientNet-Lite0 and real photos split by photo into calib.npz/heldout.npz).
Each architecture is written by hwopt from the original with the calibration
crops (``hwopt apply``, least-squares refits), then recovered with ``hwopt
recover`` on the calibration crops only and judged on the held-out photos'
crops (never trained on):

- ``a20``: the issue's -20% point, chosen for the least fidelity lost per
  microsecond saved (measured one decision at a time): fuse-ibn on ibn1, ibn2
  (the early blocks, where npu32's depthwise convs cost most per channel),
  ibn6, ibn7, and dw0 made dense (exact); -20.9% measured.
- ``b45``: the -45% point: fuse-ibn on ibn1-3, ibn6, ibn7, dw0 dense, and
  half the hidden width of ibn9-ibn15 (the 672- and 1152-channel blocks);
  -47.1% measured.
- ``fuse3``: fuse-ibn on ibn1-ibn3 (-15.0%, the previous figure).
- ``fastest``: the search's fastest architecture on npu32 (``hwopt optimize -t
  npu32 --for-retraining``; -61%).

Latencies are ``hwopt measure -t npu32`` (the SCALE-Sim emulator, kernel by
kernel), not estimates. Every command runs under ``nice -n 19`` with one torch
thread: the machine these figures come from is shared (2 cores, other jobs), so
the recovery budget buys fewer steps than it would on an idle machine; the
epochs done, the wall time and the load average (before, after) are printed
with each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def hwopt(*args: str) -> subprocess.CompletedProcess:
    command = ["nice", "-n", "19", sys.executable, "-m", "hwopt.cli", *args]
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


# key: (label, hwopt apply --rule arguments)
RULES = {
    "a20": ("fuse-ibn ibn1,2,6,7 + dw0 dense", ["fuse-ibn@ibn1,ibn2,ibn6,ibn7", "dw-to-dense@dw0"]),
    "b45": ("fuse-ibn ibn1-3,6,7 + dw0 dense + hidden x0.5 ibn9-15",
            ["fuse-ibn@ibn1,ibn2,ibn3,ibn6,ibn7", "dw-to-dense@dw0",
             "depth-multiplier:ratio=0.5@ibn9,ibn10,ibn11,ibn12,ibn13,ibn14,ibn15"]),
    "fuse3": ("fuse-ibn ibn1-ibn3", ["fuse-ibn@ibn1,ibn2,ibn3"]),
    # What the default search writes since dw-to-grouped (exact: every depthwise conv grouped, the width per
    # site as the estimator chose it), and two points of its latency / agreement front beyond it.
    "g46": ("dw-to-grouped everywhere, the default search's choice (exact)", [
        "dw-to-grouped:channels=16@dw0,dw5,dw6,dw7,dw15", "dw-to-grouped:channels=24@dw2,dw3",
        "dw-to-grouped:channels=30@dw4", "dw-to-grouped:channels=32@dw1",
        "dw-to-grouped:channels=8@dw8,dw9,dw10,dw11,dw12,dw13,dw14"]),
    "g48": ("g46 + fuse-ibn ibn2 + the hidden widths of ibn4, ibn5 trimmed to 224 (front point F4)", [
        "align-channels:p=32,mode=trim@ch:blocks.4__expand_conv_Conv,ch:blocks.5__expand_conv_Conv",
        "fuse-ibn@ibn2", "dw-to-grouped:channels=16@dw0,dw5,dw6,dw7,dw15", "dw-to-grouped:channels=24@dw3",
        "dw-to-grouped:channels=30@dw4", "dw-to-grouped:channels=32@dw1",
        "dw-to-grouped:channels=8@dw8,dw9,dw10,dw11,dw12,dw13,dw14"]),
    "g50": ("g46 + fuse-ibn ibn2 + hidden x0.5 ibn9 + ibn4's hidden trimmed to 224 (front point F5)", [
        "depth-multiplier:ratio=0.5@ibn9", "align-channels:p=32,mode=trim@ch:blocks.4__expand_conv_Conv",
        "fuse-ibn@ibn2", "dw-to-grouped:channels=16@dw0,dw5,dw6,dw7,dw15", "dw-to-grouped:channels=24@dw3",
        "dw-to-grouped:channels=30@dw4", "dw-to-grouped:channels=32@dw1",
        "dw-to-grouped:channels=8@dw8,dw9,dw10,dw11,dw12,dw13,dw14"]),
}


def applied(key: str, case: Path, out: Path) -> Path:
    """The architecture ``key`` written by hwopt apply from the original, refit on the calibration crops."""
    path = out / f"{key}.onnx"
    if not path.exists():
        rules = [arg for rule in RULES[key][1] for arg in ("--rule", rule)]
        hwopt("apply", str(case / "efficientnet_lite0.onnx"), "-o", str(path), *rules, "--calibration",
              str(case / "calib.npz"), "-q")
    return path


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recover_figures", description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=ROOT / "build" / "trained_case")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "recover_figures")
    parser.add_argument("--budget", default="10m", help="recovery time budget per architecture")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--only", default="g46,g50", help="comma-separated: " + ", ".join([*RULES, "fastest"]))
    parser.add_argument("--recover-args", default="", help="extra hwopt recover arguments, one string given with =: "
                        "--recover-args=--train-rewritten")
    args = parser.parse_args(argv)
    original = args.case / "efficientnet_lite0.onnx"
    if not original.exists():
        raise SystemExit(f"{original}: missing; build the case first: python -m bench.trained_case")
    args.out.mkdir(parents=True, exist_ok=True)
    keys = args.only.split(",")
    unknown = [k for k in keys if k not in (*RULES, "fastest")]
    if unknown:
        raise SystemExit(f"--only: unknown architecture {unknown[0]!r} ({', '.join([*RULES, 'fastest'])})")
    base_ms = npu32_ms(original)
    print(f"original: npu32 {base_ms:.3f} ms (measured)", flush=True)
    rows = []
    for key in keys:
        label = RULES[key][0] if key in RULES else "fastest found (npu32, --for-retraining)"
        rewritten = fast_variant(args.case, args.out) if key == "fastest" else applied(key, args.case, args.out)
        recovered = args.out / f"{rewritten.stem}.recovered.onnx"
        load_before, start = load(), time.time()
        done = hwopt("recover", str(original), str(rewritten), "--calibration", str(args.case / "calib.npz"),
                     "--heldout", str(args.case / "heldout.npz"), "-o", str(recovered), "--recover-time", args.budget,
                     "--threads", args.threads, "--seed", "0", "--json", *args.recover_args.split())
        wall, load_after = time.time() - start, load()
        figures = json.loads(done.stdout)
        ms = npu32_ms(recovered)
        row = {"key": key, "variant": label, "npu32_ms": ms, "latency_change": ms / base_ms - 1, "wall_s": wall,
               "load_before": load_before, "load_after": load_after, **figures}
        rows.append(row)
        print(f"({key}) {label}: npu32 {ms:.3f} ms ({ms / base_ms - 1:+.1%} vs {base_ms:.3f} ms), held-out top-1 "
              f"agreement {figures['before']:.1%} -> {figures['after']:.1%} ({figures['held_out_samples']} crops of "
              f"held-out photos; {len(figures['epochs'])} epochs, written epoch {figures['written_epoch']}, "
              f"{figures['seconds']:.0f} s recovering, {wall:.0f} s wall; load average (1/5/15 min) {load_before} "
              f"before, {load_after} after)", flush=True)
    (args.out / f"figures-{'-'.join(keys)}.json").write_text(json.dumps({"original_npu32_ms": base_ms,
                                                                        "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
