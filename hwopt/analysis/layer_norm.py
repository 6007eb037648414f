"""Recognising a layer normalisation however an exporter wrote it.

Transformer blocks (ViT, SVTR's neck in PaddleOCR's recognisers) normalise
every token over its features. opset 17 has the op (``LayerNormalization``,
torch's exporter writes it); older exports and paddle2onnx spell it out::

    m = ReduceMean(x)          (over the last axis, keepdims)
    d = Sub(x, m)
    v = ReduceMean(Pow(d, 2))  (or Mul(d, d))
    y = Div(d, Sqrt(Add(v, eps)))   (or Mul(d, Reciprocal(Sqrt(...))))
    [y = Mul(y, gamma)] [y = Add(y, beta)]

(with, after onnxruntime's transpose optimiser, a Transpose of ``d`` in the chain.)

onnxruntime fuses that chain back into one LayerNormalization kernel
(its LayerNormFusion), and an accelerator's vector unit runs it as one
pass over the tensor, so the schedule treats it as one ``norm`` kernel
instead of nine small ones. Only a chain whose intermediate tensors are
used by nothing else is matched (otherwise it is not one kernel).
"""

from __future__ import annotations

import numpy as np

from hwopt.analysis.graph import Node, Tensor, constant_value, only_user, other_input


def _only_users(tensor: Tensor, allowed: list[Node]) -> bool:
    return bool(tensor.outputs) and all(any(user is a for a in allowed) for user in tensor.outputs)


def _is_constant(tensor: Tensor | None) -> bool:
    return tensor is not None and constant_value(tensor) is not None


def match_layer_norm(node: Node) -> list[Node] | None:
    """The nodes of the decomposed layer norm that starts at this ReduceMean (in order), or None."""
    if node.op != "ReduceMean" or not node.inputs:
        return None
    x, mean = node.inputs[0], node.outputs[0]
    sub = next((u for u in mean.outputs if u.op == "Sub" and len(u.inputs) == 2
                and u.inputs[0] is x and u.inputs[1] is mean), None)
    if sub is None or len(mean.outputs) != 1:
        return None
    d = sub.outputs[0]
    moved = only_user(d, "Transpose")  # onnxruntime's transpose optimiser sinks a Transpose into the chain
    if moved is not None:
        d = moved.outputs[0]
    users = list(d.outputs)
    square = next((u for u in users if u.op == "Pow" and u.inputs[0] is d and _is_two(u.inputs[1])
                   or u.op == "Mul" and len(u.inputs) == 2 and u.inputs[0] is d and u.inputs[1] is d), None)
    if square is None:
        return None
    variance = only_user(square.outputs[0], "ReduceMean")
    add = variance and only_user(variance.outputs[0], "Add")
    sqrt = add and _is_constant(other_input(add, variance.outputs[0])) and only_user(add.outputs[0], "Sqrt")
    if not sqrt:
        return None
    chain = [node, sub] + ([moved] if moved is not None else []) + [square, variance, add, sqrt]
    divide = next((u for u in users if u.op == "Div" and u.inputs[0] is d and u.inputs[1] is sqrt.outputs[0]), None)
    if divide is not None:
        chain.append(divide)
    else:  # d * (1 / sqrt(v + eps))
        reciprocal = only_user(sqrt.outputs[0], "Reciprocal")
        divide = reciprocal and next((u for u in users if u.op == "Mul" and reciprocal.outputs[0] in u.inputs
                                      and d in u.inputs), None)
        if not divide:
            return None
        chain += [reciprocal, divide]
    if not _only_users(d, [square, divide]):
        return None
    out = divide.outputs[0]
    for op in ("Mul", "Add"):  # the affine: gamma, then beta
        after = only_user(out, op)
        if after is None or not _is_constant(other_input(after, out)):
            break
        chain.append(after)
        out = after.outputs[0]
    return chain


def _is_two(tensor: Tensor) -> bool:
    value = constant_value(tensor)
    return value is not None and value.size == 1 and float(np.asarray(value).reshape(-1)[0]) == 2.0


def normalized_length(node: Node, shape: list[int]) -> int:
    """How many values one normalisation spans: the reduced axes of the first ReduceMean, or
    LayerNormalization's ``axis`` to the end."""
    rank = len(shape)
    if node.op == "LayerNormalization":
        axis = int(node.attrs.get("axis", -1)) % max(rank, 1)
        return int(np.prod(shape[axis:])) if rank else 1
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        value = constant_value(node.inputs[1])
        axes = None if value is None else [int(a) for a in np.asarray(value).reshape(-1)]
    if axes is None:  # every axis (keepdims reduce of the whole tensor)
        axes = list(range(rank))
    return int(np.prod([shape[a % rank] for a in axes])) if rank else 1
