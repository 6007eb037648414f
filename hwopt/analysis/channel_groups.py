"""Channel groups: sets of tensors whose channel counts must change together.

A Conv (group=1) owns the channel count of its output. Ops that act per
channel (activations, BatchNorm, pooling, Resize, depthwise convs, elementwise
ops) pass the count through; a residual Add or an SE Mul ties both operands to
one group. A Resize to constant sizes (N, C, H, W) passes it through too, its
sizes entry for C following the group. A group ends at its consumers: Convs,
and Gemm/MatMul after a Flatten (or a 2-D Reshape). What we cannot re-index safely blocks the group:
Concat/Split on channels, grouped convs, other Reshapes, Transpose, graph
inputs and outputs (their shapes are a contract), any op we do not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from hwopt.analysis.activations import UNARY_ELEMENTWISE
from hwopt.analysis.graph import Node, Tensor, channels, constant_value, rewritable_conv, sanitize, spatial

# Ops whose first input and first output share the channel dim, with no per-channel parameters.
_CHANNELWISE = UNARY_ELEMENTWISE | {
    "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
    "Resize", "Upsample", "Dropout", "Identity", "Cast",
}
_BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu", "Sum", "Mean"}


@dataclass
class ParamUse:
    """A per-channel constant of a pass-through op (BatchNorm stats, an Add's bias, PRelu slope)."""

    node: Node
    input_index: int
    axis: int  # the constant's axis that indexes channels
    neutral: float  # value for new channels that keeps padding exact


@dataclass
class ShapeUse:
    """A constant shape operand that spells out the channel count (Resize's sizes: torch dynamo, LRASPP)."""

    node: Node
    input_index: int
    position: int  # the entry that holds the channel count


@dataclass
class GroupConsumer:
    node: Node  # Conv, or Gemm/MatMul after a flatten
    input: Tensor  # the group tensor it reads
    spatial: int = 1  # H*W per channel for flattened consumers (columns per channel)
    flatten: Node | None = None


@dataclass
class ChannelGroup:
    id: str
    channels: int
    tensors: list[Tensor]
    producers: list[Node] = field(default_factory=list)
    consumers: list[GroupConsumer] = field(default_factory=list)
    depthwise: list[Node] = field(default_factory=list)
    params: list[ParamUse] = field(default_factory=list)
    shapes: list[ShapeUse] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)

    @property
    def resizable(self) -> bool:
        return bool(self.producers) and not self.blockers

    def describe(self) -> str:
        text = f"{self.channels} ch, {len(self.producers)} producer(s), {len(self.consumers)} consumer(s)"
        if self.depthwise:
            text += f", {len(self.depthwise)} depthwise"
        return text


def _reshape_infers_axis1(node: Node) -> bool:
    """True when a Reshape's constant target shape takes axis 1 from its input (-1, or 0 = copy)."""
    shape = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if shape is None or shape.ndim != 1 or shape.size < 2:
        return False
    return int(shape[1]) == -1 or (int(shape[1]) == 0 and not int(node.attrs.get("allowzero", 0)))


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def find_channel_groups(graph: gs.Graph) -> list[ChannelGroup]:
    """Channel groups with at least one Conv producer, in topological order of that producer."""
    builder = _GroupBuilder(graph)
    return builder.build()


class _GroupBuilder:
    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self.uf = _UnionFind()
        self.tensors: dict[str, Tensor] = {}
        self.producers: dict[str, list[Node]] = {}
        self.consumers: dict[str, list[GroupConsumer]] = {}
        self.depthwise: dict[str, list[Node]] = {}
        self.params: dict[str, list[ParamUse]] = {}
        self.shapes: dict[str, list[ShapeUse]] = {}
        self.blockers: dict[str, list[str]] = {}

    # -- recording, keyed by tensor name; merged per group at the end
    def _track(self, tensor: Tensor) -> str:
        self.tensors[tensor.name] = tensor
        self.uf.find(tensor.name)
        return tensor.name

    def _block(self, tensor: Tensor, reason: str) -> None:
        if channels(tensor) is not None and not isinstance(tensor, gs.Constant):
            self.blockers.setdefault(self._track(tensor), []).append(reason)

    def _tie(self, a: Tensor, b: Tensor) -> None:
        self.uf.union(self._track(a), self._track(b))

    def build(self) -> list[ChannelGroup]:
        for tensor in self.graph.inputs:
            self._block(tensor, "graph input")
        for tensor in self.graph.outputs:
            self._block(tensor, f"graph output {tensor.name!r}")
        for node in self.graph.nodes:
            self._visit(node)
        return self._collect()

    def _visit(self, node: Node) -> None:
        if node.op == "Conv":
            return self._visit_conv(node)
        if node.op in ("Gemm", "MatMul"):
            return self._visit_dense(node, node.inputs[0], spatial=1, flatten=None)
        if node.op in ("Flatten", "Reshape", "Squeeze", "ReduceMean", "ReduceMax"):
            return self._visit_reshape_like(node)
        if node.op == "BatchNormalization":
            self._tie(node.inputs[0], node.outputs[0])
            for index in range(1, 5):
                self.params.setdefault(node.outputs[0].name, []).append(
                    ParamUse(node, index, axis=0, neutral=1.0 if index in (1, 4) else 0.0)
                )
            return
        if node.op == "Resize" and len(node.inputs) > 3 and node.inputs[3].name:
            return self._visit_resize_to_sizes(node)
        if node.op in _CHANNELWISE and node.inputs and channels(node.inputs[0]) is not None:
            self._tie(node.inputs[0], node.outputs[0])
            return
        if node.op in _BINARY:
            return self._visit_binary(node)
        if node.op == "Pad":
            pads = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
            if pads is not None and pads.size == 8 and pads[1] == 0 and pads[5] == 0:
                self._tie(node.inputs[0], node.outputs[0])
                return
        self._block_all(node, f"{node.op} node {node.name!r}")

    def _visit_resize_to_sizes(self, node: Node) -> None:
        """Resize to constant sizes passes the channel count through when its sizes keep it."""
        x, y = node.inputs[0], node.outputs[0]
        sizes = constant_value(node.inputs[3])
        rank = len(x.shape) if x.shape is not None else 0
        axes = [int(a) % rank for a in node.attrs.get("axes", range(rank))] if rank else []
        if sizes is not None and channels(x) is not None and sizes.ndim == 1 and len(axes) == sizes.size:
            if 1 not in axes:  # opset 18 axes that leave the channel axis alone
                self._tie(x, y)
                return
            position = axes.index(1)
            if int(sizes[position]) == channels(x):
                self._tie(x, y)
                self.shapes.setdefault(y.name, []).append(ShapeUse(node, 3, position))
                return
        self._block_all(node, f"Resize {node.name!r} with explicit output sizes")

    def _block_all(self, node: Node, reason: str) -> None:
        for tensor in list(node.inputs) + list(node.outputs):
            if isinstance(tensor, gs.Variable):
                self._block(tensor, reason)

    def _visit_conv(self, node: Node) -> None:
        attrs = rewritable_conv(node)
        x, y = node.inputs[0], node.outputs[0]
        if attrs is None:
            return self._block_all(node, f"Conv {node.name!r} with non-constant weights or bias")
        if attrs.group == 1:
            self.consumers.setdefault(self._track(x), []).append(GroupConsumer(node, x))
            self.producers.setdefault(self._track(y), []).append(node)
        elif attrs.is_depthwise:
            self._tie(x, y)
            self.depthwise.setdefault(y.name, []).append(node)
        else:
            self._block_all(node, f"grouped conv {node.name!r} (group={attrs.group})")

    def _visit_dense(self, node: Node, x: Tensor, spatial: int, flatten: Node | None) -> None:
        weight = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
        shape = x.shape
        transposed_a = node.op == "Gemm" and int(node.attrs.get("transA", 0))
        if weight is None or weight.ndim != 2 or shape is None or len(shape) != 2 or transposed_a:
            return self._block_all(node, f"{node.op} {node.name!r} (not a dense layer on a flattened tensor)")
        source = flatten.inputs[0] if flatten is not None else x
        self.consumers.setdefault(self._track(source), []).append(
            GroupConsumer(node, source, spatial=spatial, flatten=flatten)
        )
        for tensor in node.outputs:
            self._block(tensor, f"output of {node.op} {node.name!r}")

    def _visit_reshape_like(self, node: Node) -> None:
        x, y = node.inputs[0], node.outputs[0]
        if node.op == "Reshape" and not _reshape_infers_axis1(node):
            # A target shape that spells out axis 1 (paddle2onnx: Reshape(x, [1, 200]) before the
            # classifier MatMul) would no longer fit once the channel count changes.
            return self._block_all(node, f"Reshape {node.name!r} with a fixed target shape")
        xs, ys = x.shape, y.shape
        if xs is None or ys is None or channels(x) is None:
            return self._block_all(node, f"{node.op} {node.name!r} with unknown shapes")
        hw = spatial(x)
        keeps_channel_axis = len(ys) >= 2 and ys[0] == xs[0] and ys[1] == xs[1] and len(ys) < len(xs)
        if keeps_channel_axis and node.op in ("Squeeze", "ReduceMean", "ReduceMax", "Reshape", "Flatten"):
            # (N,C,1,1) -> (N,C) or spatial reduction: the channel axis survives as axis 1.
            if hw is None or node.op in ("ReduceMean", "ReduceMax") or hw == (1, 1):
                self._tie(x, y)
                return
        if node.op in ("ReduceMean", "ReduceMax") and len(ys) == len(xs) and ys[1] == xs[1]:
            self._tie(x, y)
            return
        flattens = len(ys) == 2 and hw is not None and ys[1] == xs[1] * hw[0] * hw[1]
        if flattens and y.outputs and all(c.op in ("Gemm", "MatMul") and c.inputs[0] is y for c in y.outputs):
            for dense in y.outputs:
                self._visit_dense(dense, y, spatial=hw[0] * hw[1], flatten=node)
            self._track(x)
            return
        self._block_all(node, f"{node.op} {node.name!r}")

    def _visit_binary(self, node: Node) -> None:
        y = node.outputs[0]
        out_channels = channels(y)
        rank = len(y.shape) if y.shape is not None else None
        for index, tensor in enumerate(node.inputs):
            value = constant_value(tensor)
            if value is not None:
                if rank is None or value.ndim < rank - 1:
                    continue  # scalar or broadcast over channels
                axis = value.ndim - (rank - 1)
                if value.shape[axis] == 1:
                    continue
                if value.shape[axis] != out_channels:
                    return self._block_all(node, f"{node.op} {node.name!r} (constant of unexpected shape)")
                neutral = 1.0 if node.op in ("Mul", "Div", "Pow", "PRelu") else 0.0
                self.params.setdefault(y.name, []).append(ParamUse(node, index, axis, neutral))
                continue
            if channels(tensor) == out_channels:
                self._tie(tensor, y)
            elif channels(tensor) != 1:
                return self._block_all(node, f"{node.op} {node.name!r} (broadcast over channels)")
        self._track(y)

    def _collect(self) -> list[ChannelGroup]:
        members: dict[str, list[str]] = {}
        for name in self.tensors:
            members.setdefault(self.uf.find(name), []).append(name)
        order = {node.name: i for i, node in enumerate(self.graph.nodes)}
        groups: list[ChannelGroup] = []
        for names in members.values():
            tensors = [self.tensors[n] for n in names]
            group = ChannelGroup(id="", channels=channels(tensors[0]) or 0, tensors=tensors)
            for n in names:
                group.producers += self.producers.get(n, [])
                group.consumers += self.consumers.get(n, [])
                group.depthwise += self.depthwise.get(n, [])
                group.params += self.params.get(n, [])
                group.shapes += self.shapes.get(n, [])
                group.blockers += self.blockers.get(n, [])
            counts = {channels(t) for t in tensors}
            if len(counts) > 1:
                group.blockers.append(f"inconsistent channel counts {sorted(c or 0 for c in counts)}")
            if not group.producers:
                continue
            group.producers.sort(key=lambda node: order[node.name])
            group.consumers.sort(key=lambda c: order[c.node.name])
            group.blockers = list(dict.fromkeys(group.blockers))
            groups.append(group)
        groups.sort(key=lambda g: order[g.producers[0].name])
        used: set[str] = set()
        for group in groups:
            base = "ch:" + sanitize(group.producers[0].name)
            group.id, suffix = base, 1
            while group.id in used:
                suffix += 1
                group.id = f"{base}#{suffix}"
            used.add(group.id)
        return groups

