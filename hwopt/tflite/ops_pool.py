"""Windowed and reducing ops: MaxPool, AveragePool, global pools and ReduceMean/Max (MEAN / REDUCE_MAX),
Resize (RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR) and Softmax."""

from __future__ import annotations

import numpy as np

from hwopt.tflite import layout, padding
from hwopt.tflite.context import Context
from hwopt.tflite.fusion import Unit
from hwopt.tflite.registry import ACTIVATIONS, converter
from hwopt.tflite.quantize import UNIT_INTERVAL, Q_MIN


@converter("MaxPool", "AveragePool")
def pool(ctx: Context, unit: Unit) -> None:
    node, attrs = unit.node, ctx.attrs()
    shape, out_shape = ctx.shape(node.input[0]), ctx.shape(unit.outputs[0])
    if len(shape) != 4 or len(node.output) > 1:
        raise ctx.error("only 2-D pooling without indices is written")
    kernel = tuple(attrs["kernel_shape"])
    strides = tuple(attrs.get("strides", [1, 1]))
    if tuple(attrs.get("dilations", [1, 1])) != (1, 1):
        raise ctx.error("dilated pooling has no TFLite form")
    mode, pads = padding.resolve(attrs, shape[2:], out_shape[2:], kernel, strides)
    x = ctx.input(node.input[0])
    is_max = node.op_type == "MaxPool"
    if pads is not None:
        if not is_max and not attrs.get("count_include_pad", 0):
            raise ctx.error(f"its pads {attrs.get('pads')} exclude padding from the average but are not "
                            "TFLite's SAME padding")
        # Max: pad with the lowest int8 (never the maximum); average with count_include_pad: real zeros.
        x = padding.explicit_pad(ctx, x, pads, fill=Q_MIN if is_max else None)
    # TFLite's int8 pooling kernels do not requantize (max moves values, average keeps their scale): the
    # output is quantized like the input (a fused activation then clamps within that range).
    out = ctx.output(unit.outputs[0], ctx.quant(x))
    ctx.emit("MAX_POOL_2D" if is_max else "AVERAGE_POOL_2D", [x], [out],
             ("Pool2DOptions", {"Padding": mode, "StrideH": strides[0], "StrideW": strides[1],
                                "FilterHeight": kernel[0], "FilterWidth": kernel[1],
                                "FusedActivationFunction": ACTIVATIONS[unit.activation]}))


def _reduce(ctx: Context, unit: Unit, axes: list[int], keepdims: bool, opcode: str) -> None:
    name = unit.node.input[0]
    rank = len(ctx.shape(name))
    axes = sorted(a % rank for a in axes)
    physical = sorted(layout.physical_axis(a, rank) for a in axes)
    if not keepdims:
        kept = [a for a in layout.perm(rank) if a not in axes]
        if len(kept) == 4 or kept != sorted(kept):
            raise ctx.error("its reduced output would need a transpose to ONNX order")
    x = ctx.input(name)
    out = ctx.output(unit.outputs[0], ctx.quant(x) if opcode == "REDUCE_MAX" else None)
    spec = ctx.raw_constant(f"{unit.name}/axes", np.array(physical, np.int32), "int32")
    ctx.emit(opcode, [x, spec], [out], ("ReducerOptions", {"KeepDims": bool(keepdims)}))


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: Context, unit: Unit) -> None:
    _reduce(ctx, unit, [2, 3], True, "MEAN" if unit.node.op_type == "GlobalAveragePool" else "REDUCE_MAX")


@converter("ReduceMean", "ReduceMax")
def reduce(ctx: Context, unit: Unit) -> None:
    node, attrs = unit.node, ctx.attrs()
    if len(node.input) > 1 and node.input[1]:
        axes = [int(a) for a in ctx.const(node.input[1], "axes").reshape(-1)]
    else:
        axes = list(attrs.get("axes", range(len(ctx.shape(node.input[0])))))
    _reduce(ctx, unit, axes, bool(attrs.get("keepdims", 1)), "MEAN" if node.op_type == "ReduceMean" else "REDUCE_MAX")


_COORDINATES = {"half_pixel": (False, True), "pytorch_half_pixel": (False, True), "align_corners": (True, False),
                "asymmetric": (False, False)}


@converter("Resize", "Upsample")
def resize(ctx: Context, unit: Unit) -> None:
    node, attrs = unit.node, ctx.attrs()
    shape, out_shape = ctx.shape(node.input[0]), ctx.shape(unit.outputs[0])
    if len(shape) != 4 or tuple(shape[:2]) != tuple(out_shape[:2]):
        raise ctx.error("only resizing the spatial axes of a 4-D tensor is written")
    mode = attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    coords = attrs.get("coordinate_transformation_mode", b"half_pixel" if node.op_type == "Resize" else b"asymmetric")
    coords = coords.decode() if isinstance(coords, bytes) else coords
    if mode not in ("nearest", "linear") or coords not in _COORDINATES:
        raise ctx.error(f"mode {mode!r} with coordinates {coords!r} has no TFLite resize form")
    nearest_mode = attrs.get("nearest_mode", b"round_prefer_floor")
    nearest_mode = nearest_mode.decode() if isinstance(nearest_mode, bytes) else nearest_mode
    if mode == "nearest" and coords == "asymmetric" and nearest_mode != "floor":
        raise ctx.error(f"nearest_mode {nearest_mode!r} with asymmetric coordinates is not TFLite's")
    align, half = _COORDINATES[coords]
    x = ctx.input(node.input[0])
    # Neither int8 resize kernel requantizes: the output keeps the input's parameters.
    out = ctx.output(unit.outputs[0], ctx.quant(x))
    size = ctx.raw_constant(f"{unit.name}/size", np.array(out_shape[2:], np.int32), "int32")
    if mode == "nearest":
        ctx.emit("RESIZE_NEAREST_NEIGHBOR", [x, size], [out],
                 ("ResizeNearestNeighborOptions", {"AlignCorners": align, "HalfPixelCenters": half}))
    else:
        ctx.emit("RESIZE_BILINEAR", [x, size], [out],
                 ("ResizeBilinearOptions", {"AlignCorners": align, "HalfPixelCenters": half}))


@converter("Softmax")
def softmax(ctx: Context, unit: Unit) -> None:
    node = unit.node
    rank = len(ctx.shape(node.input[0]))
    axis = int(ctx.attrs().get("axis", -1)) % rank
    if layout.physical_axis(axis, rank) != rank - 1:
        raise ctx.error(f"softmax over axis {axis} of a {rank}-D tensor is not over its stored last axis")
    ctx.emit("SOFTMAX", [ctx.input(node.input[0])], [ctx.output(unit.outputs[0], UNIT_INTERVAL)],
             ("SoftmaxOptions", {"Beta": 1.0}))
