"""Static model figures: op histogram, parameters, FLOPs, peak live activation memory.

All figures are per sample: a symbolic batch dim counts as 1. FLOPs count a
multiply-add as two operations and cover Conv, Gemm and MatMul (the rest is
negligible for CNNs and is not claimed).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from hwopt.analysis.graph import Node, Tensor, constant_value, conv_attrs


@dataclass
class ModelMetrics:
    nodes: int
    ops: Counter
    params: int
    param_bytes: int
    flops: int
    peak_activation_bytes: int

    def to_dict(self) -> dict:
        return {
            "nodes": self.nodes,
            "ops": dict(sorted(self.ops.items())),
            "params": self.params,
            "param_bytes": self.param_bytes,
            "flops": self.flops,
            "peak_activation_bytes": self.peak_activation_bytes,
        }


def tensor_bytes(tensor: Tensor) -> int:
    """Bytes of one sample of a tensor (symbolic dims count as 1); 0 if the shape is unknown."""
    if tensor.shape is None or tensor.dtype is None:
        return 0
    count = 1
    for dim in tensor.shape:
        count *= dim if isinstance(dim, int) and dim > 0 else 1
    return count * np.dtype(tensor.dtype).itemsize


def node_flops(node: Node) -> int:
    if node.op == "Conv":
        attrs = conv_attrs(node)
        out = node.outputs[0].shape
        if attrs is None or out is None:
            return 0
        spatial = int(np.prod([d for d in out[2:] if isinstance(d, int)]))
        macs = attrs.out_channels * spatial * (attrs.in_channels // attrs.group) * attrs.kernel[0] * attrs.kernel[1]
        return 2 * macs
    if node.op in ("Gemm", "MatMul"):
        weight = constant_value(node.inputs[1])
        x = node.inputs[0].shape
        if weight is None or x is None:
            return 0
        rows = int(np.prod([d for d in x[:-1] if isinstance(d, int)])) if len(x) > 1 else 1
        return 2 * rows * int(weight.size)
    return 0


def peak_activation_bytes(graph: gs.Graph) -> int:
    """Peak sum of live activation bytes over the graph's (topological) node order."""
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for tensor in node.inputs:
            if isinstance(tensor, gs.Variable):
                last_use[tensor.name] = index
    outputs = {t.name for t in graph.outputs}
    live: dict[str, int] = {t.name: tensor_bytes(t) for t in graph.inputs}
    peak = sum(live.values())
    for index, node in enumerate(graph.nodes):
        for tensor in node.outputs:
            live[tensor.name] = tensor_bytes(tensor)
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= index and n not in outputs]:
            del live[name]
    return peak


def model_metrics(graph: gs.Graph) -> ModelMetrics:
    params = 0
    param_bytes = 0
    seen: set[str] = set()
    for node in graph.nodes:
        for tensor in node.inputs:
            if isinstance(tensor, gs.Constant) and tensor.name not in seen:
                seen.add(tensor.name)
                # Sizes without loading the values (a lazily loaded weight knows its shape and dtype).
                size = int(np.prod(tensor.shape, dtype=np.int64))
                params += size
                try:
                    param_bytes += size * np.dtype(tensor.dtype).itemsize
                except TypeError:  # a type numpy does not know (bfloat16...): ask the values
                    param_bytes += int(np.asarray(tensor.values).nbytes)
    return ModelMetrics(
        nodes=len(graph.nodes),
        ops=Counter(node.op for node in graph.nodes),
        params=params,
        param_bytes=param_bytes,
        flops=sum(node_flops(node) for node in graph.nodes),
        peak_activation_bytes=peak_activation_bytes(graph),
    )
