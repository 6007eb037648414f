"""What onnxruntime's layout conversions cost inside a whole model, measured with its own profiler.

The per-kernel table times every kernel alone, net of its boundary
conversions (``ort_boundary``); inside a model onnxruntime converts tensors
between NCHWc and NCHW wherever a blocked op meets one without a blocked
kernel (``hwopt.analysis.layout`` predicts where). Their cost there is not the
isolated one: the tensor was just written by the previous kernel, and a
conversion pair timed alone runs ~2.5x faster per byte than it does in
MobileNetV3-Small. So the backend measures it where it happens: one extra
session of the whole model with onnxruntime's profiler on, whose per-node
records give each ``ReorderInput``/``ReorderOutput``'s duration and output
size; the median run's sum is kept. The estimator's in-model term learns its
per-conversion and per-byte cost from these (``hwopt.estimator.in_model``).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from dataclasses import dataclass

import onnx

RUNS = 20  # profiled runs after warm-up (the profiler's own cost is outside the node records)


@dataclass(frozen=True)
class LayoutConversions:
    count: int  # conversions per run
    bytes: int  # bytes they write per run
    us: float  # their summed duration in the median run
    nodes: tuple[tuple[int, float], ...] = ()  # each conversion: (bytes, median us over the runs)

    def to_meta(self) -> dict:
        return {"reorders": self.count, "reorder_bytes": self.bytes, "reorder_us": round(self.us, 3),
                "reorder_nodes": format_nodes(self.nodes)}


def format_nodes(nodes) -> str:
    """``bytes:us`` per conversion, ``;``-separated (one CSV cell)."""
    return ";".join(f"{size}:{us:.3f}" for size, us in nodes)


def parse_nodes(text: str) -> list[tuple[int, float]]:
    out = []
    for item in filter(None, (text or "").split(";")):
        size, us = item.split(":")
        out.append((int(size), float(us)))
    return out


def profile_conversions(model: onnx.ModelProto, make_session, feeds_of) -> LayoutConversions:
    """Run ``model`` under the profiler (``make_session(model, profile_prefix)``) and sum its conversions."""
    with tempfile.TemporaryDirectory(prefix="hwopt-prof-") as tmp:
        session = make_session(model, os.path.join(tmp, "profile"))
        feeds = feeds_of(session)
        for _ in range(5):
            session.run(None, feeds)
        for _ in range(RUNS):
            session.run(None, feeds)
        path = session.end_profiling()
        with open(path) as handle:
            events = json.load(handle)
    runs = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    per_run: dict[int, list[tuple[float, int]]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or not str(args.get("op_name", "")).startswith("Reorder"):
            continue
        if not event.get("name", "").endswith("_kernel_time"):
            continue
        run = sum(1 for start in runs if start <= event["ts"]) - 1  # the run this node record falls in
        per_run.setdefault(run, []).append((float(event["dur"]), int(args.get("output_size", 0))))
    timed = [per_run.get(run, []) for run in range(len(runs) - RUNS, len(runs))]
    if not timed or not timed[0]:
        return LayoutConversions(0, 0, 0.0)
    totals = [sum(d for d, _ in records) for records in timed]
    # Per conversion: the median over the runs (records come in the same node order every run).
    width = min(len(records) for records in timed)
    nodes = tuple((timed[0][i][1], float(statistics.median(records[i][0] for records in timed)))
                  for i in range(width))
    return LayoutConversions(len(timed[0]), sum(size for _, size in timed[0]), float(statistics.median(totals)),
                             nodes)
