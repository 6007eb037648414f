"""The optimize figures of the issue's Done-when, each from the CLI command that produces it.

    python -m bench.optimize_figures [--out /tmp/hwopt-figures] [--only mnv2,deviation,memory,cpu,exact,all]

Prints every command it runs and a summary line per figure; JSON reports land in --out.
Until npu32 has a trained estimator its cost model is the SCALE-Sim emulator, which must
simulate every distinct kernel of the space once (hours for the default rule set on a
loaded 2-core machine): pass ``--extra "--rules rules/fuse-dense.toml"`` for a small space.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from examples.build import build_example
from examples.zoo import MODELS


def run(args: list[str], out: Path, name: str) -> tuple[int, dict | None, float, str]:
    cmd = [sys.executable, "-m", "hwopt.cli", *args, "--json", "--quiet"]
    print("$ hwopt " + " ".join(args), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (out / f"{name}.json").write_text(done.stdout)
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        doc = None
    return done.returncode, doc, seconds, done.stderr.strip()


def summary(rc: int, doc: dict | None, seconds: float, err: str) -> str:
    if doc is None:
        return f"  exit {rc} in {seconds:.1f} s: {err}"
    line = f"  exit {rc} in {seconds:.1f} s, cost model {doc['cost_model']}, {doc['strategy']}"
    best = doc["best"]
    if best:
        line += (f"; best {best['latency_us']:.1f} us ({best['latency_change']:+.1%} vs baseline "
                 f"{doc['variants'][0]['latency_us']:.1f} us), memory {best['memory_bytes']:,} B, "
                 f"deviation {best['deviation']:.4g}, exact {best['exact']}")
        if best.get("measured_latency_us"):
            base = doc["variants"][0]["measured_latency_us"]
            line += f"; measured {best['measured_latency_us']:.1f} us vs {base:.1f} us ({best['measured_latency_us'] / base - 1:+.1%})"
    for f in doc["failure"]:
        line += f"\n  failure: {f}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/hwopt-figures"))
    parser.add_argument("--only", default="mnv2,deviation,memory,cpu,exact,all")
    parser.add_argument("--extra", default="", help="extra optimize options, space separated")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    models = {name: build_example(name, out) for name in MODELS}
    extra = args.extra.split()
    only = set(args.only.split(","))
    mnv2, v3 = str(models["mobilenetv2"]), str(models["mobilenetv3_small"])
    if "mnv2" in only or "deviation" in only:
        rc, doc, s, err = run(["optimize", mnv2, "-t", "npu32", "-o", str(out / "mnv2.npu32.onnx"), "--measure",
                               "--save-rules", str(out / "mnv2.npu32.toml"), "--report", str(out / "mnv2.npu32.md"),
                               *extra], out, "mnv2.npu32")
        print(summary(rc, doc, s, err))
        if "deviation" in only and doc and doc["best"]:
            half = doc["best"]["deviation"] / 2
            rc, doc2, s, err = run(["optimize", mnv2, "-t", "npu32", "-o", str(out / "mnv2.npu32.half.onnx"),
                                    "--max-deviation", f"{half:.6g}", *extra], out, "mnv2.npu32.half")
            print(summary(rc, doc2, s, err))
    if "memory" in only:
        rc, base, s, err = run(["optimize", v3, "-t", "npu32", "--rules", "rules/memory-bound.toml",
                                "-o", str(out / "v3.mem.free.onnx"), "--no-compare", *extra], out, "v3.memfree")
        budget = int(0.6 * base["variants"][0]["memory_bytes"]) if base else 0
        print(f"  mobilenetv3_small memory (params + peak activations, int8, padded to P): "
              f"{base['variants'][0]['memory_bytes'] if base else '?'} B; 60% = {budget} B")
        rc, doc, s, err = run(["optimize", v3, "-t", "npu32", "--rules", "rules/memory-bound.toml",
                               "--max-memory", str(budget), "-o", str(out / "v3.mem.onnx"), *extra], out, "v3.mem")
        print(summary(rc, doc, s, err))
    if "cpu" in only:
        rc, doc, s, err = run(["optimize", mnv2, "-t", "cpu", "-o", str(out / "mnv2.cpu.onnx"), "--measure",
                               *extra], out, "mnv2.cpu")
        print(summary(rc, doc, s, err))
    if "exact" in only:
        rc, doc, s, err = run(["optimize", mnv2, "-t", "npu32", "--exact-only", "-o", str(out / "mnv2.exact.onnx"),
                               *extra], out, "mnv2.exact")
        print(summary(rc, doc, s, err))
    if "all" in only:
        for name, path in models.items():
            for target in ("npu32", "cpu"):
                rc, doc, s, err = run(["optimize", str(path), "-t", target, "-o", str(out / f"{name}.{target}.onnx"),
                                       *extra], out, f"all.{name}.{target}")
                print(f"{name} on {target}:" + summary(rc, doc, s, err))


if __name__ == "__main__":
    main()
