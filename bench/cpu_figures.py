"""Figures for the cpu (onnxruntime) backend. Run by hand, never as a timed test:

    python -m examples.build --out /tmp/exb
    python -m hwopt.cli apply /tmp/exb/mobilenetv2.onnx -o /tmp/exb/mv2_fused.onnx \
        --rule fuse-ibn:init=linear@ibn1,ibn2,ibn3
    python bench/cpu_figures.py /tmp/exb [--json out.json]

Prints: (1) repeatability: 20 sweep kernels measured twice, max and median
relative difference of the medians; (2) every example model timed end to end
(the ground truth) beside the sum of its measured kernels; (3) MobileNetV2
before/after fusing ibn1..ibn3, end to end and per block (sum of the block's
kernels before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwopt.backends.ort_cpu import OrtBackend, machine, measure_model  # noqa: E402
from hwopt.analysis.blocks import find_ibn_blocks  # noqa: E402
from hwopt.canonical.canonicalize import load_canonical  # noqa: E402
from hwopt.analysis.graph import import_graph  # noqa: E402
from hwopt.analysis.kernels import schedule  # noqa: E402
from hwopt.estimator.profile import sweep  # noqa: E402
from hwopt.targets import load_target  # noqa: E402

EXAMPLES = ("mobilenetv2", "efficientnet_lite0", "mobilenetv3_small", "resnet18", "ssdlite_mobilenetv2",
            "segmentation")


def _agreement(kernels, first: list[float], second: list[float], floor_us: float) -> dict:
    """Relative differences for kernels of at least floor_us; absolute ones (us) below it."""
    big = [i for i, (a, b) in enumerate(zip(first, second)) if min(a, b) >= floor_us]
    rel = {i: abs(first[i] - second[i]) / min(first[i], second[i]) for i in big}
    small = [abs(a - b) for i, (a, b) in enumerate(zip(first, second)) if i not in rel]
    worst = max(rel, key=rel.get) if rel else None
    return {"kernels_over_floor": len(rel), "max_rel_diff": max(rel.values(), default=0.0),
            "median_rel_diff": statistics.median(rel.values()) if rel else 0.0,
            "worst_kernel": kernels[worst].describe() if worst is not None else "",
            "worst_us": [first[worst], second[worst]] if worst is not None else [],
            "kernels_under_floor": len(small), "max_abs_diff_under_floor_us": max(small, default=0.0)}


def repeatability(backend: OrtBackend, count: int = 20, floor_us: float = 20.0) -> dict:
    """The same sweep kernels measured twice: net latencies and raw isolated-session medians."""
    kernels = sweep(8, count=count, seed=0)
    first, second = backend.measure(kernels), backend.measure(kernels)
    return {"kernels": len(kernels), "floor_us": floor_us,
            "net": _agreement(kernels, [m.latency_us for m in first], [m.latency_us for m in second], floor_us),
            "raw": _agreement(kernels, [m.meta["raw_us"] for m in first], [m.meta["raw_us"] for m in second],
                              floor_us)}


def kernel_sum(backend: OrtBackend, canonical) -> float:
    kernels = [sk.kernel for sk in schedule(canonical).kernels]
    cache = {m.kernel: m.latency_us for m in backend.measure(list(dict.fromkeys(kernels)))}
    return sum(cache[k] for k in kernels)


def models(backend: OrtBackend, folder: Path, target) -> dict:
    out = {}
    for name in EXAMPLES:
        path = folder / f"{name}.onnx"
        _, canonical, _ = load_canonical(path)
        end_to_end = measure_model(path, target).latency_us
        out[name] = {"end_to_end_ms": end_to_end / 1000, "kernel_sum_ms": kernel_sum(backend, canonical) / 1000}
        print(f"  {name:22s} end-to-end {out[name]['end_to_end_ms']:8.3f} ms   sum of kernels "
              f"{out[name]['kernel_sum_ms']:8.3f} ms", flush=True)
    return out


def fused_blocks(backend: OrtBackend, original: Path, fused: Path, target, blocks=("ibn1", "ibn2", "ibn3")) -> dict:
    _, canon_a, _ = load_canonical(original)
    _, canon_b, _ = load_canonical(fused)
    graph = import_graph(canon_a)
    sched_a, sched_b = schedule(graph), schedule(canon_b)
    by_node = sched_a.by_node()
    # The fused convs are the kernels the fused model has and the original lacks, in order.
    added = list((Counter(sk.kernel for sk in sched_b.kernels) - Counter(sk.kernel for sk in sched_a.kernels)).elements())
    found = {b.id: b for b in find_ibn_blocks(graph)}
    result = {"end_to_end_ms": {"original": measure_model(original, target).latency_us / 1000,
                                "fused": measure_model(fused, target).latency_us / 1000}, "blocks": {}}
    for block_id, fused_conv in zip(blocks, added):
        block = found[block_id]
        nodes = [n for n in (block.expand, block.depthwise, block.project, block.residual) if n is not None]
        before = list(dict.fromkeys(sched_a.kernels[by_node[n.name]].kernel for n in nodes))
        replaced = {sched_a.kernels[by_node[block.expand.name]].kernel,
                    sched_a.kernels[by_node[block.depthwise.name]].kernel}
        after = [fused_conv] + [k for k in before if k not in replaced]
        times = {m.kernel: m.latency_us for m in backend.measure(list(dict.fromkeys(before + after)))}
        result["blocks"][block_id] = {
            "block": block.describe(), "fused_conv": fused_conv.describe(),
            "before_us": sum(times[k] for k in before), "after_us": sum(times[k] for k in after),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    target = load_target("cpu")
    backend = OrtBackend(target)
    figures = {"machine": machine(), "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    print(f"machine: {figures['machine']}, load average {figures['load_before']}", flush=True)
    figures["repeatability"] = rep = repeatability(backend)
    for which in ("net", "raw"):
        r = rep[which]
        print(f"repeatability ({which}) over {rep['kernels']} kernels: {r['kernels_over_floor']} >= "
              f"{rep['floor_us']:.0f} us: max rel diff {r['max_rel_diff']:.1%}, median {r['median_rel_diff']:.1%} "
              f"(worst: {r['worst_kernel']} {r['worst_us']}); {r['kernels_under_floor']} smaller: max abs diff "
              f"{r['max_abs_diff_under_floor_us']:.2f} us", flush=True)
    print("models (cpu, 1 thread):", flush=True)
    figures["models"] = models(backend, args.folder, target)
    figures["fused"] = fused = fused_blocks(backend, args.folder / "mobilenetv2.onnx",
                                            args.folder / "mv2_fused.onnx", target)
    e2e = fused["end_to_end_ms"]
    print(f"MobileNetV2 end to end: original {e2e['original']:.3f} ms, ibn1-3 fused {e2e['fused']:.3f} ms")
    for block_id, b in fused["blocks"].items():
        print(f"  {block_id} ({b['block']}): {b['before_us']:.1f} us -> {b['after_us']:.1f} us "
              f"(fused conv {b['fused_conv']})")
    figures["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
