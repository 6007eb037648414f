"""Models measured on both hardware classes with the fair npu32 model, and what the old charge made of them.

For each model: npu32 (array-only) and npu32-dw (depthwise engine) measured as
``hwopt measure`` does (kernels emulated + the memory-budget charge), and, from
the same SCALE-Sim results, the figure the charge before 2026-12 gave on npu32
(every repeated run paying SCALE-Sim's whole-layer total, no memory charge):
how much of that old figure was per-run prefetch and write-out (the
difference, as neither charge is bandwidth-bound there).

``python -m bench.fair_figures ORIGINAL.onnx OPTIMIZED.onnx ...`` (the first
model is the reference the others' changes are stated against).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hwopt.backends import scalesim_model
from hwopt.backends.scalesim import ScaleSimBackend
from hwopt.targets import load_target


def old_latency_us(m, clock_mhz: float) -> float:
    """One npu32 measurement as the charge before 2026-12 had it: a repeated layer paying SCALE-Sim's whole-layer
    total (prefetch, compute, write-out) once per run, as SCALE-Sim's own DP mode does."""
    meta = m.meta
    if meta.get("model") != "scalesim":
        return m.latency_us
    cycles = max(meta["sim_total_cycles"] * meta["repeats"], meta["memory_cycles"]) + meta["act_cycles"]
    return cycles / clock_mhz


def old_charge_us(model, target) -> float:
    """The model's npu32 kernel sum under the old charge (SCALE-Sim total x runs), from the same simulations."""
    from hwopt.analysis.kernels import schedule
    from hwopt.canonical.canonicalize import canonicalize
    from hwopt.io.model import load_model

    canonical, _ = canonicalize(load_model(model), verify=False)
    backend = ScaleSimBackend(target)
    kernels = [sk.kernel for sk in schedule(canonical, target.fusion).kernels]
    return sum(old_latency_us(m, backend.clock_mhz) for m in backend.measure(kernels))


def figures(path: Path) -> dict:
    npu32, engine = load_target("npu32"), load_target("npu32-dw")
    fair = scalesim_model(path, npu32)
    dw = scalesim_model(path, engine)
    old = old_charge_us(path, npu32)
    return {"model": str(path), "npu32_us": fair.latency_us, "npu32_kernels_us": fair.meta["kernel_sum_us"],
            "npu32_memory_us": fair.meta["memory_charge_us"], "npu32_dw_us": dw.latency_us,
            "npu32_dw_memory_us": dw.meta["memory_charge_us"], "old_npu32_us": old,
            "old_prefetch_share": (old - fair.meta["kernel_sum_us"]) / old,
            "onchip": fair.meta["onchip"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    args = parser.parse_args(argv)
    rows = [figures(p) for p in args.models]
    ref = rows[0]
    print("| model | npu32 old charge | of which per-run prefetch | npu32 fair (kernels + memory) | "
          "npu32-dw (kernels + memory) |")
    print("|---|---|---|---|---|")
    for r in rows:
        def cell(key: str) -> str:
            change = "" if r is ref else f" ({r[key] / ref[key] - 1:+.1%})"
            return f"{r[key] / 1000:.3f} ms{change}"
        print(f"| {Path(r['model']).name} | {cell('old_npu32_us')} | {r['old_prefetch_share']:.1%} | "
              f"{cell('npu32_us')} ({r['npu32_kernels_us'] / 1000:.3f} + {r['npu32_memory_us'] / 1000:.3f}) | "
              f"{cell('npu32_dw_us')} (+{r['npu32_dw_memory_us'] / 1000:.3f} memory) |")
    assert all(math.isfinite(r["npu32_us"]) for r in rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
