"""npu32's charge for repeated runs (depthwise, grouped conv, batched matmul) against SCALE-Sim itself.

A depthwise conv, a grouped conv and a batched MatMul run one layer many times
(once per channel, group or head); ``hwopt.backends.scalesim`` simulates that
layer once. This bench compares, per shape, in cycles:

- ``old``: the charge before 2026-12, SCALE-Sim's whole-layer total (prefetch,
  compute, write-out) times the runs; for a depthwise conv it is exactly what
  SCALE-Sim's own depthwise mode (a layer named ``DP``: one full layer per
  channel, run one after another) reports, checked here on the shapes with
  ``--dp`` (the sum over SCALE-Sim's per-channel layers);
- ``pipelined``: today's charge, ``hwopt.backends.scalesim.pipelined_cycles``
  (prefetch and write-out once, compute with its fold fill/drain per run);
- ``whole``: ONE SCALE-Sim layer whose folds are exactly the runs' folds,
  simulated whole: the same input and filter size per fold and the same
  output pixels streamed per fold, with every run's filters padded to whole
  array columns (``whole_layer``), so SCALE-Sim schedules the runs itself. Its
  ``compute`` is the runs' compute as SCALE-Sim counts it; its ``total`` adds
  what SCALE-Sim does before and after: it loads every operand that fits in
  its SRAM before the first fold and flushes the buffered outputs after the
  last one, without overlapping them with compute.

The pipelined charge should lie between the whole layer's compute (perfect
overlap of memory and compute) and its total (none), and its compute part
should match. ``python -m bench.pipelined_charge [--dp] [--json OUT]``;
results of distinct layers are cached like every SCALE-Sim run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

from hwopt.analysis.kernel import Kernel
from hwopt.backends.scalesim import LayerSpec, ScaleSimBackend, layer_for, pipelined_cycles
from hwopt.targets import load_target


def _dw(c: int, out: int, k: int = 3, s: int = 1) -> Kernel:
    size = out * s
    return Kernel("dwconv", c, c, size, size, out, out, k, k, s, groups=c)


def _gconv(c: int, per_group: int, out: int, k: int = 3, s: int = 1) -> Kernel:
    size = out * s
    return Kernel("gconv", c, c, size, size, out, out, k, k, s, groups=c // per_group)


def _bmm(heads: int, rows: int, cin: int, cout: int) -> Kernel:
    return Kernel("gemm", cin, cout, groups=heads, batch=heads * rows, inputs=2, op="MatMul")


# Depthwise shapes of MobileNetV2 / EfficientNet-Lite0's stages (3x3 and 5x5, stride 1 and 2) at widths and
# resolutions SCALE-Sim simulates whole in seconds to a minute (the whole layer of a depthwise conv has 32
# filters per channel), the grouped convs dw-to-grouped writes (32, 16 and 8 channels per group), and
# attention's per-head products (ViT-Ti, SVTR).
SHAPES = (
    _dw(16, 28), _dw(24, 28, s=2), _dw(32, 28), _dw(64, 14), _dw(96, 14, k=5), _dw(144, 7), _dw(240, 7, k=5, s=2),
    _dw(576, 7),
    _gconv(96, 32, 28, s=2), _gconv(144, 16, 28), _gconv(384, 8, 7), _gconv(960, 32, 7),
    _bmm(3, 197, 64, 197), _bmm(8, 40, 64, 40),
)


def whole_layer(kernel: Kernel, cols: int) -> LayerSpec:
    """One layer whose folds are the runs' folds: each run's filters padded to whole array columns."""
    spec, runs = layer_for(kernel)
    return LayerSpec(spec.ifmap_h, spec.ifmap_w, spec.filter_h, spec.filter_w, spec.channels,
                     runs * math.ceil(spec.num_filters / cols) * cols, spec.stride)


def dp_cycles(backend: ScaleSimBackend, kernel: Kernel) -> int:
    """SCALE-Sim's own depthwise mode on a depthwise conv (total cycles summed over its channel layers)."""
    from hwopt.backends.scalesim_env import ensure_env
    import subprocess

    spec, runs = layer_for(kernel)
    layer = {**spec.__dict__, "channels": runs, "scalesim_dp": True}
    request = json.dumps({"settings": backend.sim_settings, "layers": [layer]})
    from hwopt.backends.scalesim import WORKER

    done = subprocess.run([str(ensure_env()), "-I", str(WORKER)], input=request, capture_output=True, text=True,
                          check=True)
    (result,) = json.loads(done.stdout)
    assert result["layers"] == runs, result
    return int(result["total_cycles"])


def compare(kernels=SHAPES, dp: bool = False, dp_max_runs: int = 200) -> list[dict]:
    target = load_target("npu32")
    backend = ScaleSimBackend(target)
    cols = int(target.backend_settings["array_cols"])
    rows = []
    for kernel in kernels:
        start = time.perf_counter()
        spec, runs = layer_for(kernel)
        whole = whole_layer(kernel, cols)
        sims = backend.simulate([spec, whole])
        one, big = sims[spec], sims[whole]
        row = {"kernel": kernel.describe(), "runs": runs,
               "one_total": one["total_cycles"], "one_compute": one["compute_cycles"],
               "old": one["total_cycles"] * runs, "pipelined": pipelined_cycles(one, runs),
               "whole_total": big["total_cycles"], "whole_compute": big["compute_cycles"],
               "runs_compute": one["compute_cycles"] * runs}
        if dp and kernel.kind == "dwconv" and runs <= dp_max_runs:
            row["dp"] = dp_cycles(backend, kernel)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(_line(row), file=sys.stderr, flush=True)
    return rows


def _pct(a: float, b: float) -> str:
    return f"{a / b - 1:+.1%}"


def _line(r: dict) -> str:
    return (f"{r['kernel']}: runs {r['runs']}, old {r['old']}, pipelined {r['pipelined']}, whole {r['whole_total']} "
            f"(compute {r['whole_compute']}), dp {r.get('dp', '-')}")


def table(rows: list[dict]) -> list[str]:
    """Markdown lines: cycles per charge, and each charge's error against SCALE-Sim run whole."""
    lines = ["| kernel | runs | old (x runs) | SCALE-Sim DP | pipelined | SCALE-Sim whole: total / compute | "
             "old vs whole total | pipelined vs whole total | pipelined vs whole compute | compute per run vs whole |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['runs']} | {r['old']:,} | {r['dp']:,} | " if "dp" in r else
                     f"| {r['kernel']} | {r['runs']} | {r['old']:,} | - | ")
        lines[-1] += (f"{r['pipelined']:,} | {r['whole_total']:,} / {r['whole_compute']:,} | "
                      f"{_pct(r['old'], r['whole_total'])} | {_pct(r['pipelined'], r['whole_total'])} | "
                      f"{_pct(r['pipelined'], r['whole_compute'])} | {_pct(r['runs_compute'], r['whole_compute'])} |")
    return lines


def summary(rows: list[dict]) -> list[str]:
    """The comparison in words: the errors stated against SCALE-Sim run whole and its DP mode."""
    def spread(values) -> str:
        values = sorted(values)
        return f"{values[0]:+.1%} to {values[-1]:+.1%} (median {statistics.median(values):+.1%})"

    compute = [r["runs_compute"] / r["whole_compute"] - 1 for r in rows]
    below = [r["pipelined"] / r["whole_total"] - 1 for r in rows]
    above = [r["pipelined"] / r["whole_compute"] - 1 for r in rows]
    old = [r["old"] / r["whole_total"] - 1 for r in rows]
    dp = [r for r in rows if "dp" in r]
    inside = sum(r["whole_compute"] * 0.99 <= r["pipelined"] <= r["whole_total"] for r in rows)
    return [
        f"- {len(rows)} shapes ({sum(r['kernel'].startswith('dwconv') for r in rows)} depthwise, "
        f"{sum(r['kernel'].startswith('gconv') for r in rows)} grouped, "
        f"{sum(r['kernel'].startswith('matmul') for r in rows)} batched matmuls), in cycles of npu32's 32x32 array; "
        "'whole': ONE SCALE-Sim layer whose folds are the runs' folds (each run's filters padded to the 32 columns), "
        "so SCALE-Sim schedules the runs itself",
        f"- the runs' compute (each run's folds with their fill/drain, x runs) against SCALE-Sim's compute of the "
        f"whole layer: {spread(compute)}",
        f"- the pipelined charge (prefetch and write-out once) against SCALE-Sim's whole-layer total: {spread(below)}; "
        f"against its compute alone: {spread(above)}; within [compute - 1%, total] on {inside} of {len(rows)}: "
        "SCALE-Sim loads every operand that fits in its SRAM before the first fold and flushes the buffered "
        "outputs after the last one without overlapping either with compute, which a double-buffered array "
        "does; the pipelined charge overlaps everything after the first run's prefetch",
        f"- the old charge (SCALE-Sim's whole-layer total x runs) against the whole-layer total: {spread(old)}",
        f"- SCALE-Sim's own depthwise mode (a layer named DP: one full layer per channel, one after another) equals "
        f"the old charge on {sum(r['dp'] == r['old'] for r in dp)} of {len(dp)} depthwise shapes run that way "
        "(exactly: it is what the old charge did)",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dp", action="store_true", help="also run SCALE-Sim's own depthwise mode (DP)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--card", action="store_true", help="write the table into npu32's card")
    parser.add_argument("--rows", help="the rows of an earlier --json run (nothing simulated again)")
    args = parser.parse_args(argv)
    rows = json.load(open(args.rows)) if args.rows else compare(dp=args.dp)
    lines = summary(rows) + [""] + table(rows)
    print("\n".join(lines))
    if args.card:
        from hwopt.estimator.card import read_card, write_card
        from hwopt.targets import load_target

        folder = load_target("npu32").folder
        card = read_card(folder)
        card["charge_check"] = {"command": "python -m bench.pipelined_charge --dp", "rows": rows,
                                "summary_lines": lines}
        write_card(folder, card)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
