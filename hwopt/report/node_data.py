"""Per-node overlays for Google's Model Explorer (``--node-data FILE.json``).

Model Explorer (``pip install model-explorer model-explorer-onnx``, optional:
hwopt only writes files) colours a graph's nodes by a *node data* file: a
``GraphNodeData`` JSON object, ``{"results": {NODE_ID: {"value": V}}, ...}``
with an optional ``gradient`` (stops 0..1 and colours) and per-node
``bgColor``. With the ONNX adapter a node's id is its ONNX node name.

For each graph (``original``: the input file; ``rewritten``: the written
model) three files are written next to FILE: ``FILE.<graph>.latency.json``
(estimated microseconds of the kernel a node starts; nodes fused into it get
no value, so group sums stay right), ``FILE.<graph>.traffic.json`` (off-chip
bytes of that kernel: the estimator's traffic head, or bytes read and written
where the target has none) and ``FILE.<graph>.rule.json`` (the rule that
rewrites a node, or ``as is``). Nodes without a name in the file get no value
(the viewer makes up their ids). Open them with::

    model-explorer MODEL.onnx --extensions=model_explorer_onnx --node_data_paths=FILE.original.latency.json,...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import onnx

from hwopt.io.atomic import atomic_write_text

GRADIENT = [{"stop": 0, "bgColor": "#f7fbff"}, {"stop": 0.5, "bgColor": "#fdae6b"}, {"stop": 1, "bgColor": "#d7301f"}]
RULE_COLORS = {"fuse-ibn": "#f28e2b", "dw-to-dense": "#4e79a7", "align-channels": "#59a14f",
               "depth-multiplier": "#b07aa1", "as is": "#e8eaed", "new": "#edc948"}
METRICS = ("latency", "traffic", "rule")


def paths(path: Path, graph: str) -> dict[str, Path]:
    stem = str(path)[: -len(".json")] if str(path).lower().endswith(".json") else str(path)
    return {m: Path(f"{stem}.{graph}.{m}.json") for m in METRICS}


def node_names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node]


def graph_node_data(model: onnx.ModelProto, estimate, rules: dict[str, str], dtype_bytes: int) -> dict[str, dict]:
    """The three GraphNodeData objects of one graph: ``estimate`` is the estimator's ``ModelEstimate`` of the
    model's canonical schedule; ``rules`` maps node names to the rule that rewrote (or will rewrite) them."""
    names = set(node_names(model))
    latency: dict[str, Any] = {}
    traffic: dict[str, Any] = {}
    for k in estimate.per_kernel:
        head = next((n for n in k.nodes if n in names), None)
        if head is None:
            continue  # a node canonicalisation made (absent from the file the viewer opens)
        latency[head] = {"value": round(float(k.latency_us), 4)}
        if k.dram_bytes is not None:
            traffic[head] = {"value": round(float(k.dram_bytes), 1)}
    rule = {}
    for name in node_names(model):
        if not name:
            continue  # an unnamed node: the viewer makes up its id, which no file can name
        value = rules.get(name, "as is")
        rule[name] = {"value": value, "bgColor": RULE_COLORS.get(value.split(" ")[0], "#cccccc")}
    return {"latency": {"results": latency, "gradient": GRADIENT},
            "traffic": {"results": traffic, "gradient": GRADIENT},
            "rule": {"results": rule, "showExpandedSummaryOnGroupNode": True,
                     "showLabelCountColumnsInChildrenStatsTable": True}}


def traffic_fallback(estimate, schedule, dtype_bytes: int) -> None:
    """Targets without a traffic head: bytes each kernel reads and writes."""
    from hwopt.estimator.fallback import kernel_bytes

    for k, sk in zip(estimate.per_kernel, schedule.kernels):
        if k.dram_bytes is None:
            k.dram_bytes = float(kernel_bytes(sk.kernel, dtype_bytes))


def write(path: Path, graphs: Iterable[tuple[str, onnx.ModelProto, dict[str, str]]], estimator) -> list[Path]:
    """Write the files of each (graph name, model as the viewer opens it, node rules); returns their paths."""
    from hwopt.canonical.canonicalize import canonicalize
    from hwopt.analysis.kernels import schedule

    written = []
    for graph, model, rules in graphs:
        canonical, _ = canonicalize(model, verify=False)
        sched = schedule(canonical, estimator.target.fusion)
        est = estimator.estimate(sched, allow_fallback=True)
        traffic_fallback(est, sched, estimator.dtype_bytes)
        data = graph_node_data(model, est, rules, estimator.dtype_bytes)
        for metric, file in paths(path, graph).items():
            atomic_write_text(file, json.dumps(data[metric], indent=1) + "\n")
            written.append(file)
    return written


def site_rules(result) -> dict[str, str]:
    """Node name -> rule for every node of a site the best variant rewrites (canonical names)."""
    out: dict[str, str] = {}
    if result.best is None:
        return out
    for var, d in zip(result.space.variables, result.best.decisions):
        option = var.options[d]
        if option.choice is None:
            continue
        rule = option.choice.rule
        nodes = []
        if var.block is not None:
            b = var.block
            nodes += [n for n in (b.expand, b.depthwise, b.project) if n is not None]
        if var.dw is not None:
            nodes.append(var.dw.node)
        for group, _ in var.tables:
            nodes += list(group.producers) + list(group.depthwise) + [c.node for c in group.consumers]
        for node in nodes:
            out.setdefault(node.name, rule)
    return out
