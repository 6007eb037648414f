"""Ops that move data without computing: Reshape & co., Transpose, Concat, Pad, Slice, Split, SpaceToDepth,
Gather (constant indices).

A reshape is only a reshape of the bytes when the stored (NHWC) order and the ONNX order agree; where
they differ, the data is first transposed to ONNX order, reshaped, then transposed to the stored layout
of the result (``layout.same_memory_order`` says when the transposes are not needed, e.g. flattening
[1, C, 1, 1]). All keep their input's quantization: TFLite's RESHAPE/TRANSPOSE/PAD copy bytes.
"""

from __future__ import annotations

import numpy as np

from hwopt.tflite import layout
from hwopt.tflite.context import Context
from hwopt.tflite.fusion import Unit
from hwopt.tflite.registry import ACTIVATIONS, converter


def _transpose(ctx: Context, index: int, perm: list[int], name: str, out: int | None = None) -> int:
    shape = ctx.tshape(index)
    if out is None:
        out = ctx.internal(name, tuple(shape[p] for p in perm), ctx.quant(index))
    spec = ctx.raw_constant(f"{name}/perm", np.array(perm, np.int32), "int32")
    ctx.emit("TRANSPOSE", [index, spec], [out], ("TransposeOptions", {}))
    return out


def _reshape(ctx: Context, index: int, shape: tuple[int, ...], name: str, out: int | None = None) -> int:
    if out is None:
        out = ctx.internal(name, shape, ctx.quant(index))
    spec = ctx.raw_constant(f"{name}/shape", np.array(shape, np.int32), "int32")
    ctx.emit("RESHAPE", [index, spec], [out])
    return out


def view(ctx: Context, unit: Unit) -> None:
    """The output holds the input's elements in ONNX order, in another shape. A Transpose fused in front
    (``hwopt_perm``, see ``fusion``) only changes which order that is, so Transpose + Reshape of an NHWC
    tensor to NHWC order (TensorFlow-born heads) is a single RESHAPE."""
    src, dst = unit.node.input[0], unit.outputs[0]
    in_shape, out_shape = ctx.shape(src), ctx.shape(dst)
    rank = len(in_shape)
    order = list(ctx.attrs().get("hwopt_perm", range(rank)))  # the data wanted: ONNX input axes in this order
    x = ctx.input(src)
    to_order = layout.view_reorder(order, ctx.tshape(x))  # transpose of the stored tensor giving that order
    out = ctx.output(dst, ctx.quant(x))
    if to_order is not None:
        x = _transpose(ctx, x, to_order, f"{dst}/to_onnx_order")
    if layout.same_memory_order(out_shape):
        _reshape(ctx, x, layout.physical_shape(out_shape), dst, out)
        return
    x = _reshape(ctx, x, tuple(out_shape), f"{dst}/onnx_order")
    _transpose(ctx, x, list(layout.perm(len(out_shape))), dst, out)


@converter("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(ctx: Context, unit: Unit) -> None:
    view(ctx, unit)


@converter("Transpose")
def transpose(ctx: Context, unit: Unit) -> None:
    src = unit.node.input[0]
    rank = len(ctx.shape(src))
    onnx_perm = list(ctx.attrs().get("perm", reversed(range(rank))))
    physical = layout.transpose_perm(onnx_perm, rank)
    x = ctx.input(src)
    out = ctx.output(unit.outputs[0], ctx.quant(x))
    if physical == sorted(physical):
        _reshape(ctx, x, ctx.tshape(out), unit.outputs[0], out)  # the stored order does not change
    else:
        _transpose(ctx, x, physical, unit.outputs[0], out)


@converter("Concat")
def concat(ctx: Context, unit: Unit) -> None:
    """CONCATENATION; LiteRT's int8 kernel wants every input quantized like the output, so an input with
    other parameters is requantized first (QUANTIZE int8 -> int8, which Vela runs on the NPU)."""
    node = unit.node
    rank = len(ctx.shape(unit.outputs[0]))
    axis = layout.physical_axis(int(ctx.attrs()["axis"]), rank)
    inputs = [ctx.input(name) if not ctx.is_const(name) else ctx.constant(f"{unit.name}/{name}",
                                                                           ctx.const(name).astype(np.float32), rank)
              for name in node.input]
    out = ctx.output(unit.outputs[0])
    aligned = [ctx.requantized(index, ctx.quant(out)) for index in inputs]
    ctx.emit("CONCATENATION", aligned, [out],
             ("ConcatenationOptions", {"Axis": axis, "FusedActivationFunction": ACTIVATIONS[unit.activation]}))


@converter("Pad")
def pad(ctx: Context, unit: Unit) -> None:
    node, attrs = unit.node, ctx.attrs()
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise ctx.error(f"{mode} padding is not written (constant only)")
    rank = len(ctx.shape(node.input[0]))
    pads = (ctx.const(node.input[1], "pads").reshape(-1) if len(node.input) > 1 and node.input[1]
            else np.array(attrs["pads"]))
    if len(node.input) > 3 and node.input[3]:
        raise ctx.error("Pad with axes is not written")
    if np.any(pads < 0):
        raise ctx.error("negative pads (cropping) are not written")
    value = float(ctx.const(node.input[2], "constant_value").reshape(-1)[0]) if len(node.input) > 2 and node.input[2] \
        else float(attrs.get("value", 0.0))
    pairs = np.stack([pads[:rank], pads[rank:]], axis=1).astype(np.int32)  # ONNX axis order
    physical = pairs[list(layout.perm(rank))]
    x = ctx.input(node.input[0])
    out = ctx.output(unit.outputs[0], ctx.quant(x))
    spec = ctx.raw_constant(f"{unit.name}/paddings", physical, "int32")
    if value == 0.0:
        ctx.emit("PAD", [x, spec], [out], ("PadOptions", {}))
        return
    quant = ctx.quant(x)
    fill = int(np.clip(round(value / quant.scale[0]) + quant.zero_point[0], -128, 127))
    ctx.emit("PADV2", [x, spec, ctx.raw_constant(f"{unit.name}/value", np.array([fill], np.int8), "int8", quant)],
             [out], ("PadV2Options", {}))


def _ints(ctx: Context, position: int, attr: str, what: str) -> list[int] | None:
    """A constant int list given as input ``position`` (newer opsets) or as the attribute ``attr``."""
    node = ctx.unit.node
    if len(node.input) > position and node.input[position]:
        return [int(v) for v in ctx.const(node.input[position], what).reshape(-1)]
    value = ctx.attrs().get(attr)
    return None if value is None else [int(v) for v in value]


@converter("Slice")
def slice_(ctx: Context, unit: Unit) -> None:
    """SLICE (every step 1) or STRIDED_SLICE, begin/size/strides given per physical axis. Vela runs both
    on the NPU when the batch and channel strides are 1."""
    node = unit.node
    src = node.input[0]
    shape = ctx.shape(src)
    rank = len(shape)
    starts, ends = _ints(ctx, 1, "starts", "starts"), _ints(ctx, 2, "ends", "ends")
    if starts is None or ends is None:
        raise ctx.error("it has no starts/ends")
    axes = _ints(ctx, 3, "axes", "axes") or list(range(len(starts)))
    steps = _ints(ctx, 4, "", "steps") or [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.error("starts, ends, axes and steps differ in length")
    begin, end, stride = [0] * rank, list(shape), [1] * rank  # ONNX axis order
    for start, stop, axis, step in zip(starts, ends, axes, steps):
        if step <= 0:
            raise ctx.error(f"step {step} on axis {axis} (a reversing slice is not written)")
        axis %= rank
        dim = shape[axis]
        start, stop = (v + dim if v < 0 else v for v in (start, stop))
        begin[axis], end[axis], stride[axis] = min(max(start, 0), dim), min(max(stop, 0), dim), step
    out_shape = tuple(max(0, -(-(e - b) // s)) for b, e, s in zip(begin, end, stride))
    if out_shape != tuple(ctx.shape(unit.outputs[0])):
        raise ctx.error(f"the slice gives {list(out_shape)}, the model says {list(ctx.shape(unit.outputs[0]))}")
    order = layout.perm(rank)
    begin, end, stride = ([values[axis] for axis in order] for values in (begin, end, stride))
    x = ctx.input(src)
    out = ctx.output(unit.outputs[0], ctx.quant(x))

    def spec(suffix: str, values: list[int]) -> int:
        return ctx.raw_constant(f"{unit.name}/{suffix}", np.array(values, np.int32), "int32")

    if all(s == 1 for s in stride):
        ctx.emit("SLICE", [x, spec("begin", begin), spec("size", [e - b for b, e in zip(begin, end)])], [out],
                 ("SliceOptions", {}))
        return
    ctx.emit("STRIDED_SLICE", [x, spec("begin", begin), spec("end", end), spec("strides", stride)], [out],
             ("StridedSliceOptions", {}))


@converter("Split")
def split(ctx: Context, unit: Unit) -> None:
    """SPLIT (equal parts) or SPLIT_V (the sizes as a constant) along the physical axis of ONNX's axis."""
    node = unit.node
    src = node.input[0]
    shape = ctx.shape(src)
    rank = len(shape)
    axis = int(ctx.attrs().get("axis", 0)) % rank
    sizes = _ints(ctx, 1, "split", "split") or [ctx.shape(name)[axis] for name in unit.outputs]
    if len(sizes) != len(unit.outputs) or sum(sizes) != shape[axis]:
        raise ctx.error(f"split sizes {sizes} do not cut axis {axis} of size {shape[axis]} into "
                        f"{len(unit.outputs)} outputs")
    x = ctx.input(src)
    outs = [ctx.output(name, ctx.quant(x)) for name in unit.outputs]
    physical = ctx.raw_constant(f"{unit.name}/axis", np.array(layout.physical_axis(axis, rank), np.int32), "int32")
    if len(set(sizes)) == 1:
        ctx.emit("SPLIT", [physical, x], outs, ("SplitOptions", {"NumSplits": len(outs)}))
        return
    size_splits = ctx.raw_constant(f"{unit.name}/sizes", np.array(sizes, np.int32), "int32")
    ctx.emit("SPLIT_V", [x, size_splits, physical], outs, ("SplitVOptions", {"NumSplits": len(outs)}))


@converter("SpaceToDepth")
def space_to_depth(ctx: Context, unit: Unit) -> None:
    """Output channel (i * b + j) * C + c is input channel c at row i, column j of each b x b block: b * b
    STRIDED_SLICEs (H/W strides b) joined on channels by CONCATENATION. Vela 5.2 has no NPU form of
    SPACE_TO_DEPTH (it would run on the CPU); the slices and the concat run on the NPU, and they are what
    the exporter wrote before onnxruntime fused them (YOLOX's Focus)."""
    src = unit.node.input[0]
    b = int(ctx.attrs()["blocksize"])
    n, c, h, w = ctx.shape(src)
    if h % b or w % b:
        raise ctx.error(f"H x W {h}x{w} is not a multiple of the block size {b}")
    x = ctx.input(src)
    out = ctx.output(unit.outputs[0], ctx.quant(x))
    parts = []
    for block in ctx.attrs().get("hwopt_blocks", range(b * b)):  # a channel Gather fused behind reorders them
        i, j = divmod(int(block), b)
        name = f"{unit.outputs[0]}/block_{i}_{j}"
        part = ctx.internal(name, (n, h // b, w // b, c), ctx.quant(x))
        specs = [ctx.raw_constant(f"{name}/{what}", np.array(values, np.int32), "int32")
                 for what, values in (("begin", [0, i, j, 0]), ("end", [n, h, w, c]), ("strides", [1, b, b, 1]))]
        ctx.emit("STRIDED_SLICE", [x, *specs], [part], ("StridedSliceOptions", {}))
        parts.append(part)
    ctx.emit("CONCATENATION", parts, [out], ("ConcatenationOptions", {"Axis": 3, "FusedActivationFunction": 0}))


@converter("DepthToSpace")
def depth_to_space(ctx: Context, unit: Unit) -> None:
    """DCR mode (TensorFlow's DEPTH_TO_SPACE): output pixel (h * b + i, w * b + j) channel c is input channel
    (i * b + j) * C' + c at (h, w). Vela 5.2 has no NPU form of DEPTH_TO_SPACE (it would run on the CPU), so
    it is written as data moves Vela runs on the NPU: for each block row i one SLICE of the b * C' channels
    (i * b .. i * b + b) * C', whose NHWC bytes are already row i's pixels w * b + j in order (a free RESHAPE
    to [N, H, 1, W * b * C']); a CONCATENATION of the b rows on that axis gives the bytes of the
    [N, H * b, W * b, C'] output (a last RESHAPE)."""
    src = unit.node.input[0]
    attrs = ctx.attrs()
    mode = attrs.get("mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "DCR":
        raise ctx.error(f"mode {mode} is not written (DCR only)")
    b = int(attrs["blocksize"])
    n, c, h, w = ctx.shape(src)
    if c % (b * b):
        raise ctx.error(f"{c} channels are not a multiple of blocksize^2 = {b * b}")
    depth = c // (b * b)
    x = ctx.input(src)
    out = ctx.output(unit.outputs[0], ctx.quant(x))
    rows = []
    for i in range(b):
        name = f"{unit.outputs[0]}/row_{i}"
        part = ctx.internal(name, (n, h, w, b * depth), ctx.quant(x))
        begin = ctx.raw_constant(f"{name}/begin", np.array([0, 0, 0, i * b * depth], np.int32), "int32")
        size = ctx.raw_constant(f"{name}/size", np.array([n, h, w, b * depth], np.int32), "int32")
        ctx.emit("SLICE", [x, begin, size], [part], ("SliceOptions", {}))
        rows.append(_reshape(ctx, part, (n, h, 1, w * b * depth), f"{name}/flat"))
    joined = ctx.internal(f"{unit.outputs[0]}/rows", (n, h, b, w * b * depth), ctx.quant(x))
    ctx.emit("CONCATENATION", rows, [joined], ("ConcatenationOptions", {"Axis": 2, "FusedActivationFunction": 0}))
    _reshape(ctx, joined, (n, h * b, w * b, depth), unit.outputs[0], out)


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """[start, stop) of each run of consecutive ascending indices, in order."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([index, index + 1])
    return [(start, stop) for start, stop in runs]


@converter("Gather")
def gather(ctx: Context, unit: Unit) -> None:
    """A Gather of a constant 1-D index list (a channel reordering, a crop): each run of consecutive indices
    is a SLICE, the runs joined by CONCATENATION. Vela 5.2 runs no GATHER on the NPU; slices and concats
    it does."""
    node = unit.node
    src = node.input[0]
    shape = ctx.shape(src)
    rank = len(shape)
    axis = int(ctx.attrs().get("axis", 0)) % rank
    indices = ctx.const(node.input[1], "indices")
    if indices.ndim != 1:
        raise ctx.error(f"indices of rank {indices.ndim} (only a 1-D constant list is written)")
    x = ctx.input(src)
    out = ctx.output(unit.outputs[0], ctx.quant(x))
    physical = layout.physical_axis(axis, rank)
    runs = _runs([int(i) % shape[axis] for i in indices])
    parts = []
    for k, (start, stop) in enumerate(runs):
        begin, size = [0] * rank, list(ctx.tshape(x))
        begin[physical], size[physical] = start, stop - start
        part = out if len(runs) == 1 else ctx.internal(f"{unit.outputs[0]}/run_{k}", tuple(size), ctx.quant(x))
        ctx.emit("SLICE", [x, ctx.raw_constant(f"{unit.outputs[0]}/run_{k}/begin", np.array(begin, np.int32), "int32"),
                           ctx.raw_constant(f"{unit.outputs[0]}/run_{k}/size", np.array(size, np.int32), "int32")],
                 [part], ("SliceOptions", {}))
        parts.append(part)
    if len(runs) > 1:
        ctx.emit("CONCATENATION", parts, [out],
                 ("ConcatenationOptions", {"Axis": physical, "FusedActivationFunction": 0}))
