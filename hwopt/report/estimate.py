"""The estimate as a rich table (per kernel) and totals, or as a JSON-ready dict."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hwopt.estimator.estimator import ModelEstimate


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def print_estimate(console: Console, est: ModelEstimate, name: str, elapsed_ms: float | None = None) -> None:
    banded = est.low_us is not None
    table = Table("#", "kernel", "nodes", "latency (us)", *(["80% band (us)"] if banded else []), "share", "off-chip",
                  "note", title=f"{name} on {est.target}")
    total = est.latency_us or 1.0
    for i, k in enumerate(est.per_kernel):
        note = "free (target)" if k.free else ("FALLBACK: roofline" if k.fallback else "")
        if k.ood and not k.fallback:
            note = "OUT OF TABLE: " + ", ".join(k.outside)
        band = [f"{k.low_us:.2f}-{k.high_us:.2f}" if k.low_us is not None and not k.free else ""] if banded else []
        table.add_row(str(i), k.description, ", ".join(k.nodes[:3]) + (" ..." if len(k.nodes) > 3 else ""),
                      f"{k.latency_us:.2f}", *band, f"{100 * k.latency_us / total:.1f}%", _bytes(k.dram_bytes), note)
    console.print(table)
    free = sum(1 for k in est.per_kernel if k.free)
    console.print(f"latency: {est.latency_us / 1000:.3f} ms over {len(est.per_kernel)} kernels"
                  + (f" ({free} free views at 0)" if free else ""))
    if banded:
        drivers = "; ".join(f"{k.description} {k.low_us:.1f}-{k.high_us:.1f} us" + (" (out of table)" if k.ood else "")
                            for k in est.drivers())
        console.print(f"  80% band: {est.low_us / 1000:.3f}-{est.high_us / 1000:.3f} ms; "
                      f"{len(est.ood_kernels)} kernel(s) outside the training table's range; widest: {drivers}",
                      highlight=False)
    else:
        console.print("  no band: this estimator was trained without intervals (retrain it: hwopt train)")
    if est.in_model_us:
        console.print(f"  of which in-model term: {est.in_model_us / 1000:.3f} ms (dispatch, layout conversions "
                      f"and cache effects between kernels, learned from models measured end to end)")
    console.print(f"parameters: {_bytes(est.param_bytes)}   peak activations: {_bytes(est.peak_activation_bytes)}"
                  f"   off-chip traffic: {_bytes(est.dram_bytes)}")
    if getattr(est, "memory_basis", ""):
        console.print(f"  (memory in the {est.memory_basis}; hwopt inspect counts the file as stored)", highlight=False)
    if getattr(est, "onchip", None) is not None:
        console.print(f"memory budget: {est.onchip.describe()} (included in the latency; "
                      f"{'nothing off chip' if not est.onchip.traffic_bytes else 'streamed from DRAM every inference'})",
                      highlight=False)
    if est.fallbacks:
        console.print(f"[bold red]{len(est.fallbacks)} kernel(s) estimated by the roofline FALLBACK, not the "
                      f"learned model:[/] " + "; ".join(est.fallbacks))
    if elapsed_ms is not None:
        console.print(f"estimated in {elapsed_ms:.1f} ms (schedule + predict + sum, after loading)")
