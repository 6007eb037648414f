"""Canonicalisation: a chain of view ops that ends in the shape it started from is dropped, and so is a
Pad or Slice that copies its input unchanged (``IDENTITY_MOVES``).

tf2onnx writes a Keras squeeze-excite as GlobalAveragePool -> Squeeze -> Reshape back
to (1, C, 1, 1) -> Conv, and a Reshape of a (1, 8, 1, 1) tensor to (1, 8, 1, 1) before
the expand conv. Reshape, Squeeze, Unsqueeze and Flatten never reorder elements, so
such a chain computes its input unchanged; but its constant target shape pins the
channel group (align-channels cannot resize it) and hides the squeeze-excite from the
block finder (no IBN site in Keras' EfficientNet). Only chains whose every shape is
static are dropped, and the canonical model is verified against the original.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from hwopt.canonical.edit import GraphIndex, drop_unread_initializers, read_names, tensor_shapes

VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten"})
# Data moves that copy their input unchanged when their constants say so: tf2onnx writes a Keras 'same'
# conv2d_transpose as ConvTranspose, Slice (the crop) and a Pad of all-zero pads (TF.js' EfficientPose:
# Vela copies the 16x368x368 map for it, 3.3 ms of 89 ms on ethos-u55-256).
IDENTITY_MOVES = frozenset({"Pad", "Slice"})


def _is_identity_move(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto],
                      shapes: dict[str, list[int | None]]) -> bool:
    """A Pad of all-zero pads, or a Slice of unit steps whose output has its input's (static) shape."""
    if node.op_type not in IDENTITY_MOVES or not node.input:
        return False
    shape = shapes.get(node.input[0])
    if not shape or any(d is None for d in shape) or shapes.get(node.output[0]) != shape:
        return False
    if node.op_type == "Pad":
        pads = inits.get(node.input[1]) if len(node.input) > 1 else None
        return pads is not None and not numpy_helper.to_array(pads).any()
    steps = inits.get(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    return steps is None or bool((numpy_helper.to_array(steps) == 1).all())


def _round_trip_source(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto],
                       shapes: dict[str, list[int | None]]) -> str | None:
    """The tensor at the start of ``node``'s chain of view ops that has ``node``'s output shape, if any."""
    wanted = shapes.get(node.output[0])
    if not wanted or any(d is None for d in wanted):
        return None
    current = node
    while True:
        source = current.input[0]
        if shapes.get(source) == wanted:
            return source
        upstream = producer.get(source)
        if upstream is None or upstream.op_type not in VIEW_OPS:
            return None
        current = upstream


def drop_view_round_trips(model: onnx.ModelProto) -> int:
    """Bypass view chains that end in their starting shape, in place; returns how many view nodes went."""
    graph = model.graph
    shapes = tensor_shapes(model)
    producer = GraphIndex(graph).producer
    graph_outputs = {v.name for v in graph.output}
    inits = {t.name: t for t in graph.initializer}
    bypass: dict[str, str] = {}
    for node in graph.node:
        if node.output[0] in graph_outputs:
            continue
        if node.op_type in VIEW_OPS:
            source = _round_trip_source(node, producer, shapes)
            if source is not None:
                bypass[node.output[0]] = source
        elif _is_identity_move(node, inits, shapes):
            bypass[node.output[0]] = node.input[0]
    if not bypass:
        return 0

    def resolve(name: str) -> str:
        while name in bypass:
            name = bypass[name]
        return name

    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in bypass:
                node.input[index] = resolve(name)
    # Drop the view nodes nothing reads any more (walking back: a chain empties from its end), and the
    # shape constants only they read.
    dropped_inputs: set[str] = set()
    removed = 0
    while True:
        read = read_names(graph) | graph_outputs
        dead = [n for n in graph.node if n.op_type in VIEW_OPS | IDENTITY_MOVES and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            dropped_inputs.update(node.input)
            graph.node.remove(node)
            removed += 1
    drop_unread_initializers(graph, among=dropped_inputs)
    written = {name for node in graph.node for name in node.output}
    kept_info = [v for v in graph.value_info if v.name in written]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return removed
