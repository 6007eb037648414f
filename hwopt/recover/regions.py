"""Which blocks of a rewritten model changed, and where each starts and ends in both models.

A rewrite keeps the names of the tensors at an IBN block's boundaries: fuse-ibn
replaces the expand and depthwise convs by one conv that reads the block input
and writes the depthwise output tensor, and the project conv (refit) still
writes the block output (or the residual Add does). So a block of the original
canonical model (``hwopt.analysis.blocks``) is a unit of reconstruction in the rewritten
model when its input and output tensors exist there with the same shapes: the
student block maps the rewritten model's tensor at the input, the teacher's
tensor of the same name at the output is its target. The block was rewritten
when any node on its span differs (op, attributes, wiring or weights).
Changes outside such blocks (a trimmed channel group across blocks, a depth
multiplier that changes block widths) are left to end-to-end distillation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from hwopt.recover.module import trainable_initializers
from hwopt.analysis.sites import Analysis


@dataclass
class RewrittenBlock:
    id: str  # the original's site id (ibn3)
    input: str  # tensor name, in both models
    output: str
    params: list[str]  # the rewritten model's trainable initializers on the block's span


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {v.name: tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in
                          v.type.tensor_type.shape.dim) for v in values}


def _span(model: onnx.ModelProto, start: str, end: str) -> list[onnx.NodeProto] | None:
    """The nodes that compute ``end`` from ``start`` and initializers, or None if they read anything else."""
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {t.name for t in model.graph.initializer}
    chosen: dict[int, onnx.NodeProto] = {}
    stack = [end]
    while stack:
        name = stack.pop()
        if name == start or name in constants or not name:
            continue
        node = producers.get(name)
        if node is None:
            return None  # reads a graph input or a tensor from outside the block
        if id(node) not in chosen:
            chosen[id(node)] = node
            stack.extend(node.input)
    order = {id(node): i for i, node in enumerate(model.graph.node)}
    return sorted(chosen.values(), key=lambda n: order[id(n)])


def _signature(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> tuple:
    """What a node computes: op, attributes, wiring and the values of its constant inputs."""
    constants = tuple(numpy_helper.to_array(weights[i]).tobytes() if i in weights else b"" for i in node.input)
    attrs = tuple(sorted(a.SerializeToString() for a in node.attribute))
    return node.op_type, attrs, tuple(i for i in node.input if i not in weights), tuple(node.output), constants


def rewritten_blocks(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> list[RewrittenBlock]:
    """The original's IBN blocks that were rewritten and can be reconstructed alone, in graph order.

    ``original`` is the canonical form of the model hwopt rewrote (the names the rewrites kept).
    """
    before, after = _shapes(original), _shapes(rewritten)
    weights_before = {t.name: t for t in original.graph.initializer}
    weights_after = {t.name: t for t in rewritten.graph.initializer}
    trainable = set(trainable_initializers(rewritten))
    found = []
    for block in Analysis(original).blocks:
        start, end = block.input.name, block.output.name
        if any(name not in after or after[name] != before.get(name) for name in (start, end)):
            continue
        old, new = _span(original, start, end), _span(rewritten, start, end)
        if old is None or new is None:
            continue
        if [_signature(n, weights_before) for n in old] == [_signature(n, weights_after) for n in new]:
            continue
        params = list(dict.fromkeys(i for n in new for i in n.input if i in trainable))
        found.append(RewrittenBlock(block.id, start, end, params))
    return found


def changed_parameters(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> list[str]:
    """The rewritten model's trainable initializers that are new or hold other values than the original's."""
    before = {t.name: t for t in original.graph.initializer}
    after = {t.name: t for t in rewritten.graph.initializer}
    changed = []
    for name in trainable_initializers(rewritten):
        old = before.get(name)
        if old is None or not np.array_equal(numpy_helper.to_array(old), numpy_helper.to_array(after[name])):
            changed.append(name)
    return changed


def shared_tensors(original: onnx.ModelProto, rewritten: onnx.ModelProto,
                   probe: dict[str, np.ndarray] | None = None) -> set[str]:
    """Tensors the rewritten model computes as the original does: from the graph inputs through nodes
    identical in both (op, attributes, wiring, weights). The teacher computes them for both.

    With ``probe`` samples, a tensor of the same name and shape that both models compute with the same
    values there (within hwopt's exact tolerance) counts too, and so does what identical nodes compute
    from it: an exact rewrite (dw-to-dense, a padded channel group) changes nodes, not tensors, and the
    student need not run (or train) it."""
    weights_before = {t.name: t for t in original.graph.initializer}
    weights_after = {t.name: t for t in rewritten.graph.initializer}
    theirs = {_signature(n, weights_before) for n in original.graph.node}
    shared = {v.name for v in rewritten.graph.input}
    equal = _equal_tensors(original, rewritten, probe) if probe is not None else set()
    for node in rewritten.graph.node:
        inputs = [i for i in node.input if i and i not in weights_after]
        if all(i in shared for i in inputs) and _signature(node, weights_after) in theirs:
            shared.update(node.output)
        shared.update(o for o in node.output if o in equal)
    return shared


def _equal_tensors(original: onnx.ModelProto, rewritten: onnx.ModelProto, probe: dict[str, np.ndarray]) -> set[str]:
    """Tensors of the same name and shape in both models whose values agree on ``probe``."""
    from hwopt.calibration.samples import OrtRunner  # onnxruntime only when probing
    from hwopt.fidelity.verify import ATOL, RTOL

    before, after = _shapes(original), _shapes(rewritten)
    produced = {o for n in rewritten.graph.node for o in n.output}
    names = [n for n in after if n in produced and n in before and after[n] == before[n]]
    if not names:
        return set()
    ours = OrtRunner(rewritten, names, only_extra=True).run_all(probe)
    theirs = OrtRunner(original, names, only_extra=True).run_all(probe)
    return {n for n in names
            if np.abs(ours[n] - theirs[n]).max() <= ATOL + RTOL * np.abs(theirs[n]).max()}


def frontier(rewritten: onnx.ModelProto, shared: set[str]) -> list[str]:
    """The shared tensors that nodes of the rewritten model computing something else read: where the
    student starts (it needs nothing before them), in graph order."""
    produced_shared = {o for n in rewritten.graph.node if set(n.output) <= shared for o in n.output}
    names: dict[str, None] = {}
    for node in rewritten.graph.node:
        if set(node.output) <= produced_shared:
            continue
        for name in node.input:
            if name in shared:
                names[name] = None
    outputs = [o.name for o in rewritten.graph.output if o.name in shared]  # an output no change reaches
    return list(dict.fromkeys([*names, *outputs]))


def block_boundaries(original: onnx.ModelProto, rewritten: onnx.ModelProto, shared: set[str]) -> list[str]:
    """Outputs of the original's IBN blocks that the rewritten model computes differently (not shared)
    but with the same name and shape: where end-to-end distillation also compares features."""
    before, after = _shapes(original), _shapes(rewritten)
    return [b.output.name for b in Analysis(original).blocks
            if b.output.name not in shared and b.output.name in after and after[b.output.name] == before.get(b.output.name)]
