"""Canonicalisation: a Reshape that flattens (N, C, ...) into (N, C*...) becomes Flatten(axis=1).

torch's dynamo exporter writes ``torch.flatten(x, 1)`` before a classifier as
``Reshape(x, [1, 1280])``, paddle2onnx as ``Reshape(x, [1, 200])``: the batch and the
channel count are spelled out in a constant. That pins the channel group feeding the
classifier (align-channels cannot change 1280) and batch 1 (calibration cannot run
batched). ``Flatten(axis=1)`` computes the same tensor without naming either, which is
what torch's legacy exporter writes. Only Reshapes whose result is provably
``(N, prod(rest))`` of a statically shaped input are rewritten, so this is exact.
"""

from __future__ import annotations

import math

import onnx
from onnx import helper

from hwopt.io.held_weights import tensor_array
from hwopt.canonical.edit import drop_unread_initializers, tensor_shapes


def _flattens(dims: list[int | None], target: list[int], allowzero: bool) -> bool:
    """True when Reshape(x of ``dims``, ``target``) is (dims[0], prod(dims[1:])) for the model's inputs."""
    if len(dims) < 2 or len(target) != 2 or any(d is None for d in dims[1:]):
        return False
    rest = math.prod(dims[1:])
    # The batch entry must follow the input: copied (0), inferred (-1 with the rest spelled out) or equal.
    copied = target[0] == 0 and not allowzero
    inferred = target[0] == -1 and target[1] == rest
    equal = dims[0] is not None and target[0] == dims[0]
    second = target[1] == rest or (target[1] == -1 and target[0] != -1)
    return (copied or inferred or equal) and second and rest > 0


def reshape_to_flatten(model: onnx.ModelProto) -> int:
    """Rewrite flattening Reshapes as Flatten(axis=1) in place; returns how many were rewritten."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    shapes = tensor_shapes(model)
    rewritten = 0
    for index, node in enumerate(graph.node):
        if node.op_type != "Reshape" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        dims = shapes.get(node.input[0])
        target = tensor_array(inits[node.input[1]]).reshape(-1).tolist()
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        if dims is None or not _flattens(dims, [int(t) for t in target], allowzero):
            continue
        flatten = helper.make_node("Flatten", [node.input[0]], list(node.output), name=node.name, axis=1)
        graph.node.remove(node)
        graph.node.insert(index, flatten)
        rewritten += 1
    if rewritten:
        drop_unread_initializers(graph)
    return rewritten
