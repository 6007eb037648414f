"""Element-wise ops: Add/Sub/Mul/Div and Max/Min (with ONNX broadcasting) and activations.

Constant operands become int8 constants quantized over their own values, broadcast to the other
operand's rank first (ONNX aligns trailing axes; the padded constant is then laid out like any tensor of
that rank). HardSigmoid alone (the gate of a squeeze-excite block) is MUL by alpha then ADD beta with a
fused RELU_N1_TO_1 into an output quantized over [0, hi]: the int8 saturation at the zero point is the
clamp at 0, exactly as TFLite applies every fused ReLU.
"""

from __future__ import annotations

import numpy as np

from hwopt.tflite import layout
from hwopt.tflite.context import Context
from hwopt.tflite.fusion import Unit, activation_kind
from hwopt.tflite.graph import Quant
from hwopt.tflite.registry import ACTIVATIONS, converter
from hwopt.tflite.quantize import UNIT_INTERVAL, activation_quant

_BINARY = {"Add": ("ADD", "AddOptions"), "Sub": ("SUB", "SubOptions"), "Mul": ("MUL", "MulOptions"),
           "Div": ("MUL", "MulOptions")}


def _operand(ctx: Context, name: str, rank: int, reciprocal: bool = False) -> int:
    if ctx.is_const(name):
        values = ctx.const(name).astype(np.float32)
        if reciprocal:
            if np.any(values == 0):
                raise ctx.error("it divides by a constant holding 0")
            values = 1.0 / values
        return ctx.constant(f"{ctx.unit.name}/{name}", values, rank)
    if reciprocal:
        raise ctx.error("Div by an activation has no int8 TFLite form (only Div by a constant, as MUL)")
    index = ctx.input(name)
    shape = ctx.shape(name)
    if len(shape) == rank:
        return index
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    if len(shape) > rank or not layout.same_memory_order(padded):
        raise ctx.error(f"its operand {name!r} ({len(shape)}-D) broadcasts to {rank}-D in a way that needs a "
                        "transpose")
    reshaped = ctx.internal(f"{ctx.graph.tensors[index].name}/{rank}d", layout.physical_shape(padded),
                            ctx.quant(index))
    target = ctx.raw_constant(f"{ctx.graph.tensors[index].name}/{rank}d_shape",
                              np.array(layout.physical_shape(padded), np.int32), "int32")
    ctx.emit("RESHAPE", [index, target], [reshaped])
    return reshaped


@converter("Add", "Sub", "Mul", "Div")
def binary(ctx: Context, unit: Unit) -> None:
    node = unit.node
    if all(ctx.is_const(name) for name in node.input):
        raise ctx.error("both operands are constants (canonicalisation folds these)")
    rank = len(ctx.shape(unit.outputs[0]))
    opcode, options = _BINARY[node.op_type]
    a = _operand(ctx, node.input[0], rank)
    b = _operand(ctx, node.input[1], rank, reciprocal=node.op_type == "Div")
    out = ctx.output(unit.outputs[0])
    ctx.emit(opcode, [a, b], [out], (options, {"FusedActivationFunction": ACTIVATIONS[unit.activation]}))


@converter("Max", "Min")
def extremum(ctx: Context, unit: Unit) -> None:
    """MAXIMUM / MINIMUM of two operands. The int8 kernels compare raw int8 values, so both inputs must
    share the output's parameters (LiteRT and Vela check it): an activation with others is requantized
    first (QUANTIZE), a constant is quantized with the output's. Requantizing saturates to the output's
    range, which commutes with max/min, so the result is the one the output can hold anyway. PRelu with
    slopes <= 1 is Max(x, slope * x), a depthwise 1x1 conv and a MAXIMUM."""
    node = unit.node
    names = [name for name in node.input if name]
    if len(names) != 2:
        raise ctx.error(f"{node.op_type} of {len(names)} operands (only two are written)")
    if all(ctx.is_const(name) for name in names):
        raise ctx.error("both operands are constants (canonicalisation folds these)")
    rank = len(ctx.shape(unit.outputs[0]))
    out = ctx.output(unit.outputs[0])
    quant = ctx.quant(out)
    operands = [ctx.constant(f"{unit.name}/{name}", ctx.const(name).astype(np.float32), rank, quant)
                if ctx.is_const(name) else ctx.requantized(_operand(ctx, name, rank), quant) for name in names]
    ctx.emit("MAXIMUM" if node.op_type == "Max" else "MINIMUM", operands, [out])


@converter("Relu", "Clip")
def relu(ctx: Context, unit: Unit) -> None:
    node = unit.node
    kind = activation_kind(node, ctx.consts)
    x = ctx.input(node.input[0])
    if kind is not None:
        ctx.emit(kind, [x], [ctx.output(unit.outputs[0])])
        return
    # A general clamp: MAXIMUM then MINIMUM with constant bounds (TFLite int8 has both).
    attrs = ctx.attrs()
    low = attrs.get("min", float(ctx.const(node.input[1], "min").reshape(-1)[0]) if len(node.input) > 1
                    and node.input[1] else None)
    high = attrs.get("max", float(ctx.const(node.input[2], "max").reshape(-1)[0]) if len(node.input) > 2
                     and node.input[2] else None)
    rank = len(ctx.shape(node.input[0]))
    bounds = [(op, bound) for op, bound in (("MAXIMUM", low), ("MINIMUM", high))
              if bound is not None and np.isfinite(bound)]
    if not bounds:
        raise ctx.error("a Clip without finite bounds is an identity (canonicalisation should drop it)")
    out = ctx.output(unit.outputs[0])
    y = x
    for i, (op, bound) in enumerate(bounds):
        c = ctx.constant(f"{unit.name}/{op.lower()}", np.array([bound], np.float32), rank)
        last = i == len(bounds) - 1
        z = out if last else ctx.internal(f"{unit.outputs[0]}/{op.lower()}", ctx.tshape(x), ctx.quant(out))
        ctx.emit(op, [y, c], [z])
        y = z


@converter("LeakyRelu")
def leaky_relu(ctx: Context, unit: Unit) -> None:
    alpha = float(ctx.attrs().get("alpha", 0.01))
    ctx.emit("LEAKY_RELU", [ctx.input(unit.node.input[0])], [ctx.output(unit.outputs[0])],
             ("LeakyReluOptions", {"Alpha": alpha}))


@converter("PRelu")
def prelu(ctx: Context, unit: Unit) -> None:
    """One slope for every channel is LEAKY_RELU (as TFLite's converter writes it); per-channel slopes are
    PRELU with the slope as an int8 constant broadcast like a binary operand (MediaPipe's landmark and
    palm models carry one slope per channel)."""
    node = unit.node
    if not ctx.is_const(node.input[1]):
        raise ctx.error("its slope is an activation (TFLite's PRELU takes a constant slope here)")
    slope = ctx.const(node.input[1], "slope").astype(np.float32)
    x = ctx.input(node.input[0])
    out = ctx.output(unit.outputs[0])
    if np.all(slope == slope.reshape(-1)[0]):
        ctx.emit("LEAKY_RELU", [x], [out], ("LeakyReluOptions", {"Alpha": float(slope.reshape(-1)[0])}))
        return
    rank = len(ctx.shape(node.input[0]))
    ctx.emit("PRELU", [x, ctx.constant(f"{unit.name}/slope", slope, rank)], [out])


@converter("Sigmoid")
def sigmoid(ctx: Context, unit: Unit) -> None:
    ctx.emit("LOGISTIC", [ctx.input(unit.node.input[0])], [ctx.output(unit.outputs[0], UNIT_INTERVAL)])


@converter("Tanh")
def tanh(ctx: Context, unit: Unit) -> None:
    ctx.emit("TANH", [ctx.input(unit.node.input[0])], [ctx.output(unit.outputs[0], Quant((1.0 / 128.0,), (0,)))])


@converter("HardSwish")
def hard_swish(ctx: Context, unit: Unit) -> None:
    ctx.emit("HARD_SWISH", [ctx.input(unit.node.input[0])], [ctx.output(unit.outputs[0])],
             ("HardSwishOptions", {}))


@converter("HardSigmoid")
def hard_sigmoid(ctx: Context, unit: Unit) -> None:
    attrs = ctx.attrs()
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    name = unit.node.input[0]
    x = ctx.input(name)
    rank = len(ctx.shape(name))
    low, high = ctx.ranges.of(name)
    scaled = ctx.internal(f"{unit.outputs[0]}/scaled", ctx.tshape(x),
                          activation_quant(*sorted((alpha * low, alpha * high))))
    ctx.emit("MUL", [x, ctx.constant(f"{unit.name}/alpha", np.array([alpha], np.float32), rank)], [scaled],
             ("MulOptions", {"FusedActivationFunction": 0}))
    out_low, out_high = ctx.ranges.of(unit.outputs[0])
    out = ctx.output(unit.outputs[0], activation_quant(0.0, max(out_high, 1e-3)))
    ctx.emit("ADD", [scaled, ctx.constant(f"{unit.name}/beta", np.array([beta], np.float32), rank)], [out],
             ("AddOptions", {"FusedActivationFunction": ACTIVATIONS["RELU_N1_TO_1"]}))


@converter("BatchNormalization")
def batch_norm(ctx: Context, unit: Unit) -> None:
    """A BatchNorm canonicalisation could not fold (its input is no Conv's, e.g. after an Add in PP-OCRv4's
    detector): the per-channel affine ``x * scale + shift`` as MUL then ADD with per-channel constants."""
    from hwopt.canonical.canonicalize import batch_norm_affine

    node = unit.node
    x_name = node.input[0]
    scale, shift = batch_norm_affine(*(ctx.const(name, role) for name, role in
                                       zip(node.input[1:5], ("scale", "B", "mean", "var"))),
                                     epsilon=float(ctx.attrs().get("epsilon", 1e-5)))
    rank = len(ctx.shape(x_name))
    per_channel = (-1,) + (1,) * (rank - 2)  # ONNX's channel axis 1, trailing axes broadcast
    x = ctx.input(x_name)
    low, high = ctx.ranges.of(x_name)
    products = np.concatenate([low * scale, high * scale])
    scaled = ctx.internal(f"{unit.outputs[0]}/scaled", ctx.tshape(x),
                          activation_quant(float(min(products.min(), 0.0)), float(max(products.max(), 0.0))))
    ctx.emit("MUL", [x, ctx.constant(f"{unit.name}/scale", scale.astype(np.float32).reshape(per_channel), rank)],
             [scaled], ("MulOptions", {"FusedActivationFunction": 0}))
    ctx.emit("ADD", [scaled, ctx.constant(f"{unit.name}/shift", shift.astype(np.float32).reshape(per_channel), rank)],
             [ctx.output(unit.outputs[0])], ("AddOptions", {"FusedActivationFunction": ACTIVATIONS[unit.activation]}))
