"""Weighted ops: Conv (dense, depthwise, grouped), ConvTranspose, Gemm and MatMul with constant weights.

Weights are per-channel symmetric int8 along the output channels, biases int32 (``quantize``). TFLite
layouts: CONV_2D [O, KH, KW, I] (I = cin / groups for a grouped conv), DEPTHWISE_CONV_2D [1, KH, KW, O],
TRANSPOSE_CONV [O, KH, KW, I], FULLY_CONNECTED [O, I].
"""

from __future__ import annotations

import numpy as np

from hwopt.tflite import padding
from hwopt.tflite.context import Context
from hwopt.tflite.fusion import Unit
from hwopt.tflite.registry import ACTIVATIONS, converter
from hwopt.tflite.quantize import bias_int32, weights_per_channel


def _bias(ctx: Context, unit: Unit, name: str | None, channels: int, x: int, wquant) -> int:
    values = ctx.const(name, "bias").reshape(-1).astype(np.float32) if name else np.zeros(channels, np.float32)
    if values.size != channels:
        raise ctx.error(f"its bias has {values.size} values for {channels} output channels")
    q, quant = bias_int32(values, ctx.quant(x), wquant)
    return ctx.raw_constant(f"{unit.name}/bias", q, "int32", quant)


def _spatial(ctx: Context, name: str, what: str) -> tuple[int, int, int, int]:
    shape = ctx.shape(name)
    if len(shape) != 4:
        raise ctx.error(f"its {what} is {len(shape)}-D; only 2-D convolutions (4-D tensors) are written")
    return shape  # type: ignore[return-value]


@converter("Conv")
def conv(ctx: Context, unit: Unit) -> None:
    node, attrs = unit.node, ctx.attrs()
    _, cin, h, w = _spatial(ctx, node.input[0], "input")
    out_name = unit.outputs[0]
    _, cout, oh, ow = _spatial(ctx, out_name, "output")
    weights = ctx.const(node.input[1], "weight").astype(np.float32)
    kh, kw = weights.shape[2:]
    strides = tuple(attrs.get("strides", [1, 1]))
    dilations = tuple(attrs.get("dilations", [1, 1]))
    groups = int(attrs.get("group", 1))
    mode, pads = padding.resolve(attrs, (h, w), (oh, ow), (kh, kw), strides, dilations)
    x = ctx.input(node.input[0])
    if pads is not None:
        x = padding.explicit_pad(ctx, x, pads)
    out = ctx.output(out_name)
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    act = ACTIVATIONS[unit.activation]
    common = {"Padding": mode, "StrideH": strides[0], "StrideW": strides[1], "FusedActivationFunction": act,
              "DilationHFactor": dilations[0], "DilationWFactor": dilations[1]}
    if groups > 1 and groups == cin and cout % cin == 0:
        q, wquant = weights_per_channel(weights.transpose(1, 2, 3, 0), 3)
        wt = ctx.raw_constant(f"{unit.name}/weights", q, "int8", wquant)
        ctx.emit("DEPTHWISE_CONV_2D", [x, wt, _bias(ctx, unit, bias_name, cout, x, wquant)], [out],
                 ("DepthwiseConv2DOptions", {**common, "DepthMultiplier": cout // cin}))
        return
    # Dense, or grouped: TFLite's CONV_2D takes the groups from a filter with fewer input channels than its
    # input (cin / groups). LiteRT's int8 kernels run it and Vela splits it into one conv per group itself
    # (checked against a SPLIT + CONV_2D + CONCATENATION lowering: same numerics, the same NPU operators),
    # so the node stays one operator and one row of Vela's per-layer report.
    q, wquant = weights_per_channel(weights.transpose(0, 2, 3, 1), 0)
    wt = ctx.raw_constant(f"{unit.name}/weights", q, "int8", wquant)
    ctx.emit("CONV_2D", [x, wt, _bias(ctx, unit, bias_name, cout, x, wquant)], [out], ("Conv2DOptions", common))


@converter("ConvTranspose")
def conv_transpose(ctx: Context, unit: Unit) -> None:
    """TRANSPOSE_CONV: the weights of ONNX ConvTranspose [I, O/g, KH, KW] are TFLite's [O, KH, KW, I]
    unflipped (both are the adjoint of the same correlation); groups become a block-diagonal dense filter
    (exact: the zero blocks add zeros), since TRANSPOSE_CONV has no groups."""
    node, attrs = unit.node, ctx.attrs()
    _, cin, h, w = _spatial(ctx, node.input[0], "input")
    _, cout, oh, ow = _spatial(ctx, unit.outputs[0], "output")
    weights = ctx.const(node.input[1], "weight").astype(np.float32)
    groups = int(attrs.get("group", 1))
    kh, kw = weights.shape[2:]
    strides = tuple(attrs.get("strides", [1, 1]))
    if tuple(attrs.get("dilations", [1, 1])) != (1, 1):
        raise ctx.error("dilated ConvTranspose has no TFLite TRANSPOSE_CONV form")
    if groups > 1:
        dense = np.zeros((cin, cout, kh, kw), np.float32)
        ci, co = cin // groups, cout // groups
        for g in range(groups):
            dense[g * ci:(g + 1) * ci, g * co:(g + 1) * co] = weights[g * ci:(g + 1) * ci]
        weights = dense
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if any(attrs.get("output_padding", [0, 0])) and (oh, ow) != (h * strides[0], w * strides[1]):
        raise ctx.error("its output_padding has no TFLite TRANSPOSE_CONV form")
    if (oh, ow) == (h * strides[0], w * strides[1]):
        # SAME: TFLite pads total = (in-1)*s + k - out, the odd pixel at the end.
        expect = [((i - 1) * s + k - o) for i, s, k, o in zip((h, w), strides, (kh, kw), (oh, ow))]
        if [pads[0] + pads[2], pads[1] + pads[3]] != expect or pads[0] != expect[0] // 2 or pads[1] != expect[1] // 2:
            raise ctx.error(f"its pads {pads} are not TFLite's SAME padding")
        mode = padding.SAME
    elif not any(pads) and (oh, ow) == ((h - 1) * strides[0] + kh, (w - 1) * strides[1] + kw):
        mode = padding.VALID
    else:
        raise ctx.error(f"its output {oh}x{ow} (pads {pads}) is neither TFLite SAME nor VALID")
    x = ctx.input(node.input[0])
    out = ctx.output(unit.outputs[0])
    q, wquant = weights_per_channel(weights.transpose(1, 2, 3, 0), 0)
    wt = ctx.raw_constant(f"{unit.name}/weights", q, "int8", wquant)
    shape = ctx.raw_constant(f"{unit.name}/output_shape", np.array(ctx.tshape(out), np.int32), "int32")
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    b = _bias(ctx, unit, bias_name, cout, x, wquant)
    ctx.emit("TRANSPOSE_CONV", [shape, wt, x, b], [out],
             ("TransposeConvOptions", {"Padding": mode, "StrideH": strides[0], "StrideW": strides[1],
                                      "FusedActivationFunction": ACTIVATIONS[unit.activation]}))


def _fully_connected(ctx: Context, unit: Unit, a_name: str, weights: np.ndarray, bias: np.ndarray | None) -> None:
    """FULLY_CONNECTED of ``a`` (2-D, or 3-D keeping its leading dims) by weights [O, I]."""
    rank = len(ctx.shape(a_name))
    if rank not in (2, 3):
        raise ctx.error(f"its input is {rank}-D; FULLY_CONNECTED is written for 2-D and 3-D inputs")
    x = ctx.input(a_name)
    out = ctx.output(unit.outputs[0])
    q, wquant = weights_per_channel(weights.astype(np.float32), 0)
    wt = ctx.raw_constant(f"{unit.name}/weights", q, "int8", wquant)
    bq, bquant = bias_int32(bias if bias is not None else np.zeros(weights.shape[0], np.float32),
                            ctx.quant(x), wquant)
    b = ctx.raw_constant(f"{unit.name}/bias", bq, "int32", bquant)
    ctx.emit("FULLY_CONNECTED", [x, wt, b], [out],
             ("FullyConnectedOptions", {"FusedActivationFunction": ACTIVATIONS[unit.activation],
                                        "KeepNumDims": rank == 3}))


@converter("Gemm")
def gemm(ctx: Context, unit: Unit) -> None:
    node, attrs = unit.node, ctx.attrs()
    if attrs.get("transA", 0):
        raise ctx.error("transA = 1 (a transposed activation) has no FULLY_CONNECTED form")
    b = ctx.const(node.input[1], "weight (B)").astype(np.float32)
    weights = (b if attrs.get("transB", 0) else b.T) * float(attrs.get("alpha", 1.0))
    bias = None
    if len(node.input) > 2 and node.input[2]:
        c = ctx.const(node.input[2], "bias (C)").astype(np.float32) * float(attrs.get("beta", 1.0))
        if c.size not in (1, weights.shape[0]):
            raise ctx.error("its C is not a per-output bias")
        bias = np.broadcast_to(c.reshape(-1), (weights.shape[0],)).astype(np.float32)
    _fully_connected(ctx, unit, node.input[0], weights, bias)


@converter("MatMul")
def matmul(ctx: Context, unit: Unit) -> None:
    node = unit.node
    b = ctx.const(node.input[1], "second operand (a MatMul of two activations has no FULLY_CONNECTED form)")
    if b.ndim != 2:
        raise ctx.error("its constant operand is not 2-D")
    _fully_connected(ctx, unit, node.input[0], b.T.astype(np.float32), None)
