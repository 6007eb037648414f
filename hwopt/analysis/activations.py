"""Recognising activation functions however an exporter wrote them.

An activation is a chain of nodes that maps one tensor to another elementwise:
Relu; Clip with min/max as attributes or inputs (ReLU6); Max(Min(x, 6), 0);
HardSwish; x * HardSigmoid(x); x * Sigmoid(x) (SiLU); torch's legacy
hardswish x * Clip(x + 3, 0, 6) / 6; GELU spelled with Erf; plain unary ops. Rules keep the nodes as
they are (a rewrite re-wires tensors around them), so we only need to know
where an activation starts, where it ends and what it is called.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwopt.analysis.graph import Node, Tensor, constant_value, only_user, other_input

# Elementwise ops of one tensor input that keep shape and never mix channels.
UNARY_ELEMENTWISE = {
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu", "Abs", "Neg", "Exp", "Erf",
}


@dataclass
class Activation:
    kind: str  # relu, relu6, clip, hardswish, silu, sigmoid, hardsigmoid, leakyrelu, ...
    input: Tensor
    output: Tensor
    nodes: list[Node] = field(default_factory=list)


def match_activation(x: Tensor) -> Activation | None:
    """The activation that consumes ``x`` (all of whose nodes only touch x), or None."""
    users = list(x.outputs)
    for matcher in (
        _match_x_times_gate, _match_torch_hardswish, _match_erf_gelu, _match_minmax_relu6, _match_single,
        _match_scalar_affine
    ):
        found = matcher(x, users)
        if found is not None:
            return found
    return None


def match_activation_chain(x: Tensor) -> tuple[Tensor, list[Activation]]:
    """Follow activations from ``x`` while each is ``x``'s only use; return the end tensor."""
    chain: list[Activation] = []
    current = x
    while True:
        act = match_activation(current)
        if act is None or not _owns(current, act):
            return current, chain
        chain.append(act)
        current = act.output


def _owns(x: Tensor, act: Activation) -> bool:
    """True when every use of ``x`` is inside the activation (so it can be moved as a unit)."""
    return all(user in act.nodes for user in x.outputs)


def _match_single(x: Tensor, users: list[Node]) -> Activation | None:
    if len(users) != 1:
        return None
    node = users[0]
    if node.op in UNARY_ELEMENTWISE:
        kind = node.op.lower()
        if node.op == "HardSwish":
            kind = "hardswish"
        return Activation(kind, x, node.outputs[0], [node])
    if node.op == "PRelu" and node.inputs[0] is x:
        return Activation("prelu", x, node.outputs[0], [node])
    if node.op == "Clip" and node.inputs[0] is x:
        low, high = clip_bounds(node)
        if low is None:
            return None
        return Activation(_clip_kind(low, high), x, node.outputs[0], [node])
    return None


def _match_scalar_affine(x: Tensor, users: list[Node]) -> Activation | None:
    """x * s, x + b, x - b, x / s with a 1-element constant: elementwise, channel-blind.

    PP-LCNetV3 (PP-OCRv4) puts such a learnable affine after every activation
    (``hardswish -> Mul(scale) -> Add(bias)``); it cannot be folded into the next
    conv when that conv pads with zeros, so it is part of the activation chain.
    """
    if len(users) != 1 or users[0].op not in ("Mul", "Add", "Sub", "Div"):
        return None
    node = users[0]
    other = other_input(node, x)
    if other is None or (node.op in ("Sub", "Div") and node.inputs[0] is not x) or other is x:
        return None
    if _scalar(other) is None:
        return None
    return Activation("affine", x, node.outputs[0], [node])


def clip_bounds(node: Node) -> tuple[float | None, float | None]:
    """Clip's (min, max) from attributes (opset < 11) or constant inputs; (None, None) if not constant."""
    if "min" in node.attrs or "max" in node.attrs:
        return float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
    bounds = []
    for index, default in ((1, -np.inf), (2, np.inf)):
        if len(node.inputs) > index and node.inputs[index] is not None and node.inputs[index].name:
            value = constant_value(node.inputs[index])
            if value is None or value.size != 1:
                return None, None
            bounds.append(float(value.reshape(())))
        else:
            bounds.append(default)
    return bounds[0], bounds[1]


def _clip_kind(low: float, high: float) -> str:
    if low == 0 and high == 6:
        return "relu6"
    if low == 0 and np.isinf(high):
        return "relu"
    return "clip"


def _scalar(tensor: Tensor) -> float | None:
    value = constant_value(tensor)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


def _match_minmax_relu6(x: Tensor, users: list[Node]) -> Activation | None:
    """Max(Min(x, 6), 0) or Min(Max(x, 0), 6)."""
    if len(users) != 1 or users[0].op not in ("Min", "Max"):
        return None
    first = users[0]
    first_bound = _scalar(other_input(first, x)) if other_input(first, x) is not None else None
    mid = first.outputs[0]
    if first_bound is None or len(mid.outputs) != 1:
        return None
    second = mid.outputs[0]
    expected = "Max" if first.op == "Min" else "Min"
    other = other_input(second, mid)
    if second.op != expected or other is None:
        return None
    second_bound = _scalar(other)
    if second_bound is None:
        return None
    low, high = (second_bound, first_bound) if first.op == "Min" else (first_bound, second_bound)
    return Activation(_clip_kind(low, high), x, second.outputs[0], [first, second])


def _match_x_times_gate(x: Tensor, users: list[Node]) -> Activation | None:
    """x * HardSigmoid(x) (hardswish when alpha=1/6, beta=0.5) or x * Sigmoid(x) (SiLU)."""
    if len(users) != 2:
        return None
    gates = [u for u in users if u.op in ("HardSigmoid", "Sigmoid")]
    muls = [u for u in users if u.op == "Mul"]
    if len(gates) != 1 or len(muls) != 1:
        return None
    gate, mul = gates[0], muls[0]
    if other_input(mul, x) is not gate.outputs[0] or len(gate.outputs[0].outputs) != 1:
        return None
    if gate.op == "Sigmoid":
        kind = "silu"
    else:
        alpha = float(gate.attrs.get("alpha", 0.2))
        beta = float(gate.attrs.get("beta", 0.5))
        kind = "hardswish" if abs(alpha - 1 / 6) < 1e-4 and abs(beta - 0.5) < 1e-6 else "x*hardsigmoid"
    return Activation(kind, x, mul.outputs[0], [gate, mul])


def _match_erf_gelu(x: Tensor, users: list[Node]) -> Activation | None:
    """GELU spelled with Erf, as torch's exporter writes it before opset 20 (and onnxruntime fuses it back):
    Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)."""
    if len(users) != 2:
        return None
    divs = [u for u in users if u.op == "Div" and u.inputs[0] is x]
    muls = [u for u in users if u.op == "Mul"]
    if len(divs) != 1 or len(muls) != 1 or not np.isclose(_scalar(divs[0].inputs[1]) or 0.0, np.sqrt(2), rtol=1e-3):
        return None
    div, mul = divs[0], muls[0]
    erf = only_user(div.outputs[0], "Erf")
    add = erf and only_user(erf.outputs[0], "Add")
    if not add or _scalar(other_input(add, erf.outputs[0]) or add.inputs[0]) != 1.0 or \
            other_input(mul, x) is not add.outputs[0]:
        return None
    half = only_user(mul.outputs[0], "Mul")
    if half is None or _scalar(other_input(half, mul.outputs[0]) or half.inputs[0]) != 0.5:
        return None
    return Activation("gelu", x, half.outputs[0], [div, erf, add, mul, half])


def _match_torch_hardswish(x: Tensor, users: list[Node]) -> Activation | None:
    """x * Clip(x + 3, 0, 6) / 6, in either order of the final Mul and Div (or Mul by 1/6)."""
    if len(users) != 2:
        return None
    adds = [u for u in users if u.op == "Add"]
    muls = [u for u in users if u.op == "Mul"]
    if len(adds) != 1 or len(muls) != 1:
        return None
    add, mul = adds[0], muls[0]
    if _scalar(other_input(add, x) or add.inputs[0]) != 3.0 or len(add.outputs[0].outputs) != 1:
        return None
    clip = add.outputs[0].outputs[0]
    if clip.op != "Clip" or clip_bounds(clip) != (0.0, 6.0) or len(clip.outputs[0].outputs) != 1:
        return None
    after_clip = clip.outputs[0].outputs[0]
    nodes = [add, clip, mul]
    if after_clip is mul:
        # x * relu6(x + 3), then / 6
        out = mul.outputs[0]
        if len(out.outputs) != 1 or not _is_divide_by_six(out.outputs[0], out):
            return None
        nodes.append(out.outputs[0])
        return Activation("hardswish", x, out.outputs[0].outputs[0], nodes)
    # relu6(x + 3) / 6, then * x
    if not _is_divide_by_six(after_clip, clip.outputs[0]) or other_input(mul, x) is not after_clip.outputs[0]:
        return None
    nodes.insert(2, after_clip)
    return Activation("hardswish", x, mul.outputs[0], nodes)


def _is_divide_by_six(node: Node, x: Tensor) -> bool:
    other = other_input(node, x)
    if other is None or node.inputs[0] is not x:
        return False
    value = _scalar(other)
    if value is None:
        return False
    return (node.op == "Div" and value == 6.0) or (node.op == "Mul" and abs(value - 1 / 6) < 1e-6)
