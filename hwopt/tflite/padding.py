"""ONNX explicit pads -> TFLite's two padding modes (SAME, VALID), or an explicit PAD before a VALID op.

TFLite's SAME pads ``total = max((ceil(in / stride) - 1) * stride + window - in, 0)`` with the odd pixel
at the end (``before = total // 2``), as TensorFlow does; an ONNX node whose pads are exactly that (or
``auto_pad = SAME_UPPER``), and whose output is ``ceil(in / stride)``, is SAME.
"""

from __future__ import annotations

import math

SAME, VALID = 0, 1  # tflite Padding enum


def _same_pads(size: int, window: int, stride: int) -> tuple[int, int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + window - size, 0)
    return out, total // 2, total - total // 2


def resolve(attrs: dict, in_hw: tuple[int, int], out_hw: tuple[int, int], kernel: tuple[int, int],
            strides: tuple[int, int], dilations: tuple[int, int] = (1, 1)) -> tuple[int, list[int] | None]:
    """(TFLite padding, explicit pads [top, left, bottom, right] to apply first, or None)."""
    windows = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto == "VALID":
        return VALID, None
    same = [_same_pads(s, w, st) for s, w, st in zip(in_hw, windows, strides)]
    if auto == "SAME_UPPER":
        return SAME, None
    if auto == "SAME_LOWER":
        pads = [p for _, a, b in same for p in (b, a)]  # the odd pixel at the start
        return VALID, [pads[0], pads[2], pads[1], pads[3]]
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if not any(pads):
        return VALID, None
    top, left, bottom, right = pads
    if (all(o == s[0] for o, s in zip(out_hw, same)) and (top, bottom) == same[0][1:]
            and (left, right) == same[1][1:]):
        return SAME, None
    return VALID, [top, left, bottom, right]


def explicit_pad(ctx, index: int, pads: list[int], fill: int | None = None) -> int:
    """PAD (or PADV2 with the quantized ``fill``) of an NHWC tensor by [top, left, bottom, right]; the
    result keeps the input's quantization, so padding with the zero point pads with a real 0."""
    import numpy as np

    top, left, bottom, right = pads
    n, h, w, c = ctx.tshape(index)
    paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
    quant = ctx.quant(index)
    out = ctx.internal(f"{ctx.graph.tensors[index].name}/pad", (n, h + top + bottom, w + left + right, c), quant)
    spec = ctx.raw_constant(f"{ctx.graph.tensors[index].name}/paddings", paddings, "int32")
    if fill is None:
        ctx.emit("PAD", [index, spec], [out], ("PadOptions", {}))
    else:
        value = ctx.raw_constant(f"{ctx.graph.tensors[index].name}/pad_value", np.array([fill], np.int8), "int8",
                                 quant)
        ctx.emit("PADV2", [index, spec, value], [out], ("PadV2Options", {}))
    return out
