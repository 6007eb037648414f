"""Which ONNX nodes become one TFLite operator: activations fused into their producer, x*hardsigmoid(x)
as HARD_SWISH, a block-reordering channel Gather into the SpaceToDepth before it.

TFLite int8 kernels apply a fused activation as a clamp of the quantized output, and Vela runs it in the
same NPU pass, so a conv followed by its ReLU/ReLU6 is one operator, as TFLite's own converter writes it.
A fusion is planned only where the producer's output feeds nothing else and is not a graph output, so
every ONNX tensor that survives keeps its name.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

# ONNX ops whose TFLite operator has a fused_activation_function field (and whose converter honours it).
# TRANSPOSE_CONV has the field too (TFLite op version 4; Vela 5.2 and LiteRT honour it): an up-conv's ReLU
# written apart was a separate NPU pass, 1.8% of the U-Net export's Vela cycles on ethos-u55-256
# (bench/vela_crosscheck.py, as TensorFlow's converter fuses it).
FUSES_ACTIVATION = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "MaxPool", "AveragePool",
                    "BatchNormalization"}  # a BatchNorm left standalone ends in an ADD
HARD_SWISH = (1.0 / 6.0, 0.5)  # HardSigmoid(alpha, beta) whose x * hardsigmoid(x) is hard-swish
VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}  # a Transpose in front of one of these is fused into it


@dataclass
class Unit:
    """What one converter call turns into TFLite operators."""

    node: onnx.NodeProto  # the node to convert (a synthetic one for a recognised pattern)
    outputs: list[str]  # its ONNX outputs after fusion (the fused activation's output replaces the first)
    activation: str = "NONE"  # fused: NONE | RELU | RELU6 | RELU_N1_TO_1
    onnx_nodes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.node.name


@dataclass
class Plan:
    units: list[Unit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _constant(model_consts: dict[str, np.ndarray], name: str) -> float | None:
    if not name or name not in model_consts:
        return None
    value = model_consts[name]
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def activation_kind(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> str | None:
    """The TFLite fused activation an ONNX activation node is, or None."""
    if node.op_type == "Relu":
        return "RELU"
    if node.op_type != "Clip":
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    low = attrs.get("min", _constant(consts, node.input[1]) if len(node.input) > 1 else None)
    high = attrs.get("max", _constant(consts, node.input[2]) if len(node.input) > 2 else None)
    given = [i for i in (1, 2) if len(node.input) > i and node.input[i]]
    if any((low, high)[i - 1] is None for i in given):
        return None  # a bound that is not a constant
    bounds = (low, None if high is None or np.isinf(high) else high)
    return {(0.0, 6.0): "RELU6", (0.0, None): "RELU", (-1.0, 1.0): "RELU_N1_TO_1"}.get(bounds)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def _block_order(space_to_depth: onnx.NodeProto, gather: onnx.NodeProto,
                 consts: dict[str, np.ndarray]) -> list[int] | None:
    """The order of SpaceToDepth's blocks a channel Gather behind it puts them in, or None when the Gather
    does more than reorder whole blocks of C channels."""
    attrs = {a.name: helper.get_attribute_value(a) for a in gather.attribute}
    if gather.op_type != "Gather" or attrs.get("axis", 0) != 1 or gather.input[0] != space_to_depth.output[0] \
            or gather.input[1] not in consts:
        return None
    indices = consts[gather.input[1]]
    blocks = int({a.name: helper.get_attribute_value(a) for a in space_to_depth.attribute}["blocksize"]) ** 2
    if indices.ndim != 1 or indices.size % blocks or sorted(indices.tolist()) != list(range(indices.size)):
        return None
    rows = indices.reshape(blocks, -1)
    channels = rows.shape[1]
    if any(row.tolist() != list(range(row[0], row[0] + channels)) or row[0] % channels for row in rows):
        return None
    return [int(row[0]) // channels for row in rows]


def plan(model: onnx.ModelProto) -> Plan:
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in graph.output}

    def only_consumer(name: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in graph_outputs else None

    absorbed: set[str] = set()
    result = Plan()
    for node in graph.node:
        if node.name in absorbed:
            continue
        unit = Unit(node, list(node.output), onnx_nodes=(node.name,))
        if node.op_type == "HardSigmoid":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            mul = only_consumer(node.output[0])
            if (mul is not None and mul.op_type == "Mul" and _close(attrs.get("alpha", 0.2), HARD_SWISH[0])
                    and _close(attrs.get("beta", 0.5), HARD_SWISH[1])
                    and sorted(mul.input) == sorted([node.input[0], node.output[0]])):
                swish = helper.make_node("HardSwish", [node.input[0]], list(mul.output), name=mul.name)
                unit = Unit(swish, list(mul.output), onnx_nodes=(node.name, mul.name))
                absorbed.add(mul.name)
        elif node.op_type == "Transpose" and (view := only_consumer(node.output[0])) is not None \
                and view.op_type in VIEWS and len(view.input) >= 1 and view.input[0] == node.output[0]:
            # The reshape reads the transposed data in order: one view of the transpose's input.
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            fused = onnx.NodeProto()
            fused.CopyFrom(view)
            fused.input[0] = node.input[0]
            fused.attribute.append(helper.make_attribute("hwopt_perm", list(attrs["perm"])))
            unit = Unit(fused, list(view.output), onnx_nodes=(node.name, view.name))
            absorbed.add(view.name)
        elif node.op_type == "SpaceToDepth" and (gather := only_consumer(node.output[0])) is not None \
                and (blocks := _block_order(node, gather, consts)) is not None:
            # onnxruntime fuses YOLOX's Focus (4 strided slices + concat) into SpaceToDepth + a channel Gather
            # that reorders whole blocks: one set of slices, concatenated in the Gather's order.
            fused = onnx.NodeProto()
            fused.CopyFrom(node)
            fused.attribute.append(helper.make_attribute("hwopt_blocks", blocks))
            del fused.output[:]
            fused.output.extend(gather.output)
            unit = Unit(fused, list(gather.output), onnx_nodes=(node.name, gather.name))
            absorbed.add(gather.name)
        elif node.op_type in FUSES_ACTIVATION:
            act = only_consumer(node.output[0])
            kind = activation_kind(act, consts) if act is not None else None
            if kind is not None:
                unit = Unit(node, [act.output[0], *node.output[1:]], kind, (node.name, act.name))
                absorbed.add(act.name)
        result.units.append(unit)
    return result
