"""The working graph: onnx-graphsurgeon import/export and small structural helpers.

Rules read and edit an ``onnx_graphsurgeon.Graph``; exporting goes back through
onnx shape inference and keeps the reference model's graph input/output
declarations, IR version and opsets, so written models keep their signature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_graphsurgeon.ir.tensor import LazyValues

from hwopt.canonical.canonicalize import drop_unused_opsets, infer_shapes
from hwopt.io.held_weights import HOLD_BYTES, SHRINK_AT, hold_array, is_held, tensor_array

Tensor = gs.Tensor
Node = gs.Node


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    graph = gs.import_onnx(model)
    for tensor in graph.tensors().values():  # weights held outside the proto load from where they are held
        if isinstance(tensor, gs.Constant) and type(tensor._values) is LazyValues and is_held(tensor._values.tensor):
            tensor._values.__class__ = _HeldValues
    return graph


def _hold_big_constants(graph: gs.Graph) -> None:
    """When the weights would take the proto near 2 GiB, export the large new ones held, not copied in."""
    constants = {t.name: t for t in graph.tensors().values() if isinstance(t, gs.Constant)}
    total = sum(int(np.prod(t.shape, dtype=np.int64)) * 4 for t in constants.values())  # about
    if total < SHRINK_AT:
        return
    for tensor in constants.values():
        values = tensor._values
        if isinstance(values, np.ndarray) and values.nbytes >= HOLD_BYTES and values.dtype.kind in "fiub":
            tensor._values = _HeldValues(hold_array(tensor.name, values))


class _HeldValues(LazyValues):
    """A held initializer's values for onnx-graphsurgeon (exported as the held tensor while unchanged)."""

    def load(self) -> np.ndarray:
        # Read-only and shared (a memory map of the input): rules build new arrays, never edit in place.
        return tensor_array(self.tensor)


def export_graph(graph: gs.Graph, reference: onnx.ModelProto, shapes: bool = True) -> onnx.ModelProto:
    """Export ``graph`` as a checked-shape model with ``reference``'s signature and opsets.

    ``shapes=False``: without intermediate shapes (no shape inference), for a model only run internally.
    """
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    _hold_big_constants(graph)
    model = gs.export_onnx(graph, do_type_check=False)
    signature = {v.name: v for v in list(reference.graph.input) + list(reference.graph.output)}
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name in signature:
            value.CopyFrom(signature[value.name])
    model.ir_version = reference.ir_version
    del model.opset_import[:]
    model.opset_import.extend(reference.opset_import)
    drop_unused_opsets(model)
    model.producer_name = "hwopt"
    # Stale intermediate shapes would poison inference after channel changes: infer afresh.
    del model.graph.value_info[:]
    return infer_shapes(model) if shapes else model


def input_channels(node: Node) -> int | None:
    """The channel count (dim 1, NCHW) of a node's first input, when the shape says it."""
    shape = node.inputs[0].shape
    return int(shape[1]) if shape is not None and len(shape) >= 2 and isinstance(shape[1], int) else None


def constant_value(tensor: Tensor) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node output), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
    return None


def constant_shape(tensor: Tensor) -> tuple[int, ...] | None:
    """The shape of a constant tensor without loading its values (geometry only), else None."""
    if isinstance(tensor, gs.Constant):
        return tuple(int(d) for d in tensor.shape)  # lazily loaded initializers know their dims
    value = constant_value(tensor)
    return None if value is None else tuple(value.shape)


def producer(tensor: Tensor) -> Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: Tensor) -> list[Node]:
    return list(tensor.outputs)


def only_user(tensor: Tensor, op: str) -> Node | None:
    """The one node reading ``tensor``, when there is exactly one and it is an ``op``; else None."""
    users = list(tensor.outputs)
    return users[0] if len(users) == 1 and users[0].op == op else None


def other_input(node: Node, tensor: Tensor) -> Tensor | None:
    """A two-input node's operand beside ``tensor`` (``tensor`` itself for x op x); None otherwise."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a is tensor:
        return b
    if b is tensor:
        return a
    return None


def channels(tensor: Tensor) -> int | None:
    shape = tensor.shape
    if shape is None or len(shape) < 2 or not isinstance(shape[1], int):
        return None
    return shape[1]


def spatial(tensor: Tensor) -> tuple[int, int] | None:
    shape = tensor.shape
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
        return None
    return int(shape[2]), int(shape[3])


@dataclass(frozen=True)
class ConvAttrs:
    """A Conv node's geometry with explicit pads (auto_pad resolved from shapes)."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilations: tuple[int, int]
    group: int
    in_channels: int
    out_channels: int

    @property
    def is_pointwise(self) -> bool:
        return self.kernel == (1, 1) and self.strides == (1, 1) and not any(self.pads) and self.group == 1

    @property
    def is_depthwise(self) -> bool:
        return self.group == self.in_channels == self.out_channels and self.group > 1


def conv_weight(node: Node) -> np.ndarray | None:
    return constant_value(node.inputs[1]) if len(node.inputs) > 1 else None


def conv_bias(node: Node) -> np.ndarray | None:
    if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].name:
        return constant_value(node.inputs[2])
    return None


def set_constant_input(node: Node, index: int, values: np.ndarray, suffix: str) -> None:
    """Give ``node`` its own new constant input (initializers may be shared between nodes)."""
    constant = gs.Constant(f"{node.name}_{suffix}", np.ascontiguousarray(values))
    if index < len(node.inputs):
        node.inputs[index] = constant
    else:
        node.inputs.append(constant)


def set_conv_params(node: Node, weight: np.ndarray, bias: np.ndarray, suffix: str) -> None:
    """Replace a Conv's weight and bias (adding the bias input when it had none)."""
    set_constant_input(node, 1, weight, f"W_{suffix}")
    set_constant_input(node, 2, bias, f"B_{suffix}")


def rewritable_conv(node: Node) -> ConvAttrs | None:
    """``conv_attrs`` of a Conv whose bias, if any, is constant too: rules resize and refit both.

    A computed bias (torch dynamo without its optimizer writes ``Expand(CastLike(0, x), Shape(W))``
    when canonicalisation cannot fold it) would be kept at its old size or dropped as zero.
    """
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and bias.name and constant_value(bias) is None:
        return None
    return conv_attrs(node)


def patch_conv_params(model: onnx.ModelProto, node: Node) -> None:
    """Give ``model``'s copy of Conv ``node`` the node's current weight and bias, in place.

    For a model exported from the graph before ``set_conv_params``: same shapes, so its inferred
    shapes stay valid and a full export (shape inference included) is not needed to run it.
    """
    from onnx import numpy_helper

    proto = next(n for n in model.graph.node if n.name == node.name)
    known = {t.name for t in model.graph.initializer}
    for index in (1, 2):
        tensor = node.inputs[index]
        if tensor.name not in known:
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(tensor.values), tensor.name))
        if index < len(proto.input):
            proto.input[index] = tensor.name
        else:
            proto.input.append(tensor.name)


def conv_attrs(node: Node) -> ConvAttrs | None:
    """Geometry of a 2-D Conv with constant weights, or None if it is not one we can reason about."""
    if node.op != "Conv":
        return None
    # The weight's shape only: loading every conv's values would cost ~0.5 ms per conv for nothing.
    weight_shape = constant_shape(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight_shape is None or len(weight_shape) != 4:
        return None
    group = int(node.attrs.get("group", 1))
    kernel = tuple(int(k) for k in node.attrs.get("kernel_shape", weight_shape[2:]))
    strides = tuple(int(s) for s in node.attrs.get("strides", (1, 1)))
    dilations = tuple(int(d) for d in node.attrs.get("dilations", (1, 1)))
    pads = _explicit_pads(node, kernel, strides, dilations)
    if pads is None:
        return None
    return ConvAttrs(
        kernel=kernel,  # type: ignore[arg-type]
        strides=strides,  # type: ignore[arg-type]
        pads=pads,
        dilations=dilations,  # type: ignore[arg-type]
        group=group,
        in_channels=weight_shape[1] * group,
        out_channels=weight_shape[0],
    )


def _explicit_pads(node: Node, kernel, strides, dilations) -> tuple[int, int, int, int] | None:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad in ("NOTSET", ""):
        pads = node.attrs.get("pads", (0, 0, 0, 0))
        return (int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3]))
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    hw = spatial(node.inputs[0])
    if hw is None:
        return None
    total = []
    for size, k, s, d in zip(hw, kernel, strides, dilations):
        out = math.ceil(size / s)
        total.append(max(0, (out - 1) * s + (k - 1) * d + 1 - size))
    small = [t // 2 for t in total]
    large = [t - t // 2 for t in total]
    if auto_pad == "SAME_UPPER":
        return (small[0], small[1], large[0], large[1])
    return (large[0], large[1], small[0], small[1])


def conv_node_attrs(attrs: ConvAttrs, kernel: tuple[int, int] | None = None, group: int | None = None) -> dict:
    """ONNX attributes for a new Conv with ``attrs``' geometry (explicit pads, no auto_pad)."""
    return {
        "kernel_shape": list(kernel or attrs.kernel),
        "strides": list(attrs.strides),
        "pads": list(attrs.pads),
        "dilations": list(attrs.dilations),
        "group": int(group if group is not None else attrs.group),
    }


def sanitize(name: str) -> str:
    """A node name turned into something a person can type in a site id."""
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name.strip("/"))
    return cleaned.strip("_") or "node"
