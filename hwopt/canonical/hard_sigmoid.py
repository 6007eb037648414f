"""Canonicalisation: a hard-sigmoid spelled with Add/Clip/Mul becomes one HardSigmoid.

Keras exports (tf2onnx) write MobileNetV3's hard-swish as ``x * (relu6(x + 3) * (1/6))``:
Add, Clip, Mul, Mul; and its hard-sigmoid gate as ``relu6(z) * (1/6)`` after a conv whose
bias took the ``+ 3``. onnxruntime fuses a Conv with a HardSigmoid but with none of those
ops, so each runs as its own pass over the tensor in plain NCHW, with a layout conversion
either side (Keras' MobileNetV3Small: 60 conversions, 40 once rewritten; its canonical form
ran in 1.69 ms on the cpu target against 2.24 ms as given).
One op computes the same function: ``relu6(t) / 6`` = HardSigmoid(t; alpha=1/6, beta=0),
and with ``t = x + 3``, HardSigmoid(x; alpha=1/6, beta=1/2). The hard-swish's last Mul
stays: ``x * HardSigmoid(x)`` is what onnxruntime itself turns a HardSwish into (it
inlines the function; writing HardSwish back would even clash with the names of an
earlier inlining), and what it runs inside its blocked conv. The forms agree up to
float rounding; canonicalisation verifies the model as a whole.
"""

from __future__ import annotations

import onnx
from onnx import helper

from hwopt.canonical.edit import GraphIndex, scalar_constant, splice_nodes, variable_and_scalar

SIXTH = 1.0 / 6.0


def _is_relu6(node: onnx.NodeProto, inits) -> bool:
    """A Clip to [0, 6], bounds given as inputs (opset 11+) or attributes (before)."""
    if node.op_type != "Clip":
        return False
    attrs = {a.name: a.f for a in node.attribute}
    low = scalar_constant(node.input[1], inits) if len(node.input) > 1 and node.input[1] else attrs.get("min")
    high = scalar_constant(node.input[2], inits) if len(node.input) > 2 and node.input[2] else attrs.get("max")
    return low == 0.0 and high == 6.0


def _close(value: float, wanted: float) -> bool:
    return abs(value - wanted) <= 1e-6 * abs(wanted)


def _scaled_product(scale: onnx.NodeProto, operand: str, index: GraphIndex, replaced: dict[int, onnx.NodeProto],
                    dropped: set[int]) -> bool:
    """paddle2onnx's hard-swish ``(x * relu6(x + 3)) / 6`` (the 1/6 after the product): rewritten in place as
    ``x * HardSigmoid(x)``, the form the Keras spelling gets. True when it matched."""
    inits, product = index.inits, index.producer.get(operand)
    if product is None or product.op_type != "Mul" or not index.private(operand) or len(product.input) != 2:
        return False
    for x, gate in ((product.input[0], product.input[1]), (product.input[1], product.input[0])):
        clip = index.producer.get(gate)
        add = index.producer.get(clip.input[0]) if clip is not None and clip.input else None
        shift = variable_and_scalar(add, inits) if add is not None and add.op_type == "Add" else None
        if (clip is None or not _is_relu6(clip, inits) or not index.private(gate) or shift is None
                or shift != (x, 3.0) or not index.private(add.output[0]) or id(clip) in dropped):
            continue
        replaced[id(product)] = helper.make_node("HardSigmoid", [x], [gate], name=clip.name or product.name,
                                                 alpha=SIXTH, beta=0.5)
        replaced[id(scale)] = helper.make_node("Mul", [x, gate], list(scale.output), name=scale.name or product.name)
        dropped.update((id(clip), id(add)))
        return True
    return False


def hard_sigmoids(model: onnx.ModelProto) -> int:
    """Rewrite spelled-out hard-sigmoids in place; returns how many were rewritten."""
    graph = model.graph
    index = GraphIndex(graph)
    inits, producer, private = index.inits, index.producer, index.private
    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    rewritten = 0
    for node in graph.node:  # relu6(t) * 1/6 or relu6(t) / 6
        operands = variable_and_scalar(node, inits)
        if operands is None or not ((node.op_type == "Mul" and _close(operands[1], SIXTH))
                                    or (node.op_type == "Div" and node.input[1] in inits and operands[1] == 6.0)):
            continue
        if _scaled_product(node, operands[0], index, replaced, dropped):
            rewritten += 1
            continue
        clip = producer.get(operands[0])
        if clip is None or not _is_relu6(clip, inits) or not private(clip.output[0]) or id(clip) in dropped:
            continue
        source, beta = clip.input[0], 0.0
        add = producer.get(source)
        shift = variable_and_scalar(add, inits) if add is not None and add.op_type == "Add" else None
        if shift is not None and shift[1] == 3.0 and private(add.output[0]):
            source, beta = shift[0], 0.5
            dropped.add(id(add))
        replaced[id(node)] = helper.make_node("HardSigmoid", [source], list(node.output), name=node.name or clip.name,
                                              alpha=SIXTH, beta=beta)
        dropped.add(id(clip))
        rewritten += 1
    if not replaced:
        return 0
    splice_nodes(graph, replaced, dropped)
    return rewritten
