"""ONNX operators as PyTorch functions: the registry the interpreter (``module.py``) runs.

Only what hwopt's canonical graphs contain (the examples, the real exports in
tests/data and their rewrites), plus close relatives; an op not here is one
clear error naming it. Each function takes the node's attributes and its
inputs (None for an omitted optional input) and returns its outputs. Autograd
differentiates them; nothing here defines a gradient.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
OpFunction = Callable[[dict[str, Any], list], Sequence[Tensor] | Tensor]

OPS: dict[str, OpFunction] = {}


def op(*names: str) -> Callable[[OpFunction], OpFunction]:
    def register(fn: OpFunction) -> OpFunction:
        for name in names:
            OPS[name] = fn
        return fn
    return register


def _ints(x: Tensor | None) -> list[int] | None:
    return None if x is None or x.numel() == 0 else [int(v) for v in x.reshape(-1).tolist()]


def _same_pads(size: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
               upper: bool) -> list[int]:
    """auto_pad SAME_*: ONNX pads (begins..., ends...) so that out = ceil(in / stride)."""
    begins, ends = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


def _window_pads(a: dict, x: Tensor, kernel: Sequence[int]) -> list[int]:
    """Explicit ONNX pads (begins..., ends...) of a conv or pool, auto_pad resolved."""
    spatial = x.shape[2:]
    strides = a.get("strides", [1] * len(kernel))
    dilations = a.get("dilations", [1] * len(kernel))
    mode = a.get("auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(spatial, kernel, strides, dilations, mode == "SAME_UPPER")
    if mode == "VALID":
        return [0] * (2 * len(kernel))
    return a.get("pads", [0] * (2 * len(kernel)))


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX (b1, b2, ..., e1, e2, ...) over the last axes -> F.pad's (b_last, e_last, ...)."""
    rank = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(rank)):
        out += [pads[axis], pads[axis + rank]]
    return out


def _padded(x: Tensor, pads: Sequence[int], value: float = 0.0) -> tuple[Tensor, int | list[int]]:
    """(input, padding argument for torch): symmetric pads go to torch, others are applied first."""
    rank = len(pads) // 2
    if list(pads[:rank]) == list(pads[rank:]):
        return x, list(pads[:rank])
    return F.pad(x, _torch_pad(pads), value=value), 0


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@op("Conv")
def conv(a: dict, xs: list) -> Tensor:
    x, w, b = xs[0], xs[1], xs[2] if len(xs) > 2 else None
    kernel = a.get("kernel_shape", list(w.shape[2:]))
    x, padding = _padded(x, _window_pads(a, x, kernel))
    return _CONV[len(kernel)](x, w, b, stride=a.get("strides", 1), padding=padding,
                              dilation=a.get("dilations", 1), groups=a.get("group", 1))


@op("Gemm")
def gemm(a: dict, xs: list) -> Tensor:
    x, w, c = xs[0], xs[1], xs[2] if len(xs) > 2 else None
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if c is None else y + a.get("beta", 1.0) * c


@op("MatMul")
def matmul(a: dict, xs: list) -> Tensor:
    return torch.matmul(xs[0], xs[1])


@op("Relu")
def relu(a: dict, xs: list) -> Tensor:
    return F.relu(xs[0])


@op("Clip")
def clip(a: dict, xs: list) -> Tensor:
    low = xs[1] if len(xs) > 1 and xs[1] is not None else a.get("min")
    high = xs[2] if len(xs) > 2 and xs[2] is not None else a.get("max")
    low = float(low) if low is not None else None
    high = float(high) if high is not None else None
    return torch.clamp(xs[0], low, high)


@op("HardSigmoid")
def hard_sigmoid(a: dict, xs: list) -> Tensor:
    return torch.clamp(a.get("alpha", 0.2) * xs[0] + a.get("beta", 0.5), 0.0, 1.0)


@op("HardSwish")
def hard_swish(a: dict, xs: list) -> Tensor:
    return F.hardswish(xs[0])


@op("Sigmoid")
def sigmoid(a: dict, xs: list) -> Tensor:
    return torch.sigmoid(xs[0])


@op("Tanh")
def tanh(a: dict, xs: list) -> Tensor:
    return torch.tanh(xs[0])


@op("LeakyRelu")
def leaky_relu(a: dict, xs: list) -> Tensor:
    return F.leaky_relu(xs[0], a.get("alpha", 0.01))


@op("PRelu")
def prelu(a: dict, xs: list) -> Tensor:
    return torch.where(xs[0] >= 0, xs[0], xs[0] * xs[1])


@op("Softmax")
def softmax(a: dict, xs: list) -> Tensor:
    return torch.softmax(xs[0], dim=a.get("axis", -1))


@op("Add")
def add(a: dict, xs: list) -> Tensor:
    return xs[0] + xs[1]


@op("Sub")
def sub(a: dict, xs: list) -> Tensor:
    return xs[0] - xs[1]


@op("Mul")
def mul(a: dict, xs: list) -> Tensor:
    return xs[0] * xs[1]


@op("Div")
def div(a: dict, xs: list) -> Tensor:
    return xs[0] / xs[1]


@op("Identity")
def identity(a: dict, xs: list) -> Tensor:
    return xs[0]


@op("GlobalAveragePool")
def global_average_pool(a: dict, xs: list) -> Tensor:
    return xs[0].mean(dim=tuple(range(2, xs[0].dim())), keepdim=True)


@op("GlobalMaxPool")
def global_max_pool(a: dict, xs: list) -> Tensor:
    return xs[0].amax(dim=tuple(range(2, xs[0].dim())), keepdim=True)


def _reduce_axes(a: dict, xs: list, x: Tensor) -> tuple[int, ...] | None:
    axes = _ints(xs[1]) if len(xs) > 1 and xs[1] is not None else a.get("axes")
    if not axes:
        return None if a.get("noop_with_empty_axes", 0) else tuple(range(x.dim()))
    return tuple(axes)


@op("ReduceMean")
def reduce_mean(a: dict, xs: list) -> Tensor:
    axes = _reduce_axes(a, xs, xs[0])
    return xs[0] if axes is None else xs[0].mean(dim=axes, keepdim=bool(a.get("keepdims", 1)))


@op("MaxPool")
def max_pool(a: dict, xs: list) -> Tensor:
    x, kernel = xs[0], a["kernel_shape"]
    pads = _window_pads(a, x, kernel)
    rank = len(kernel)
    if pads[:rank] != pads[rank:]:
        x, pads = F.pad(x, _torch_pad(pads), value=float("-inf")), [0] * (2 * rank)
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
    return pool(x, kernel, a.get("strides", kernel), pads[:rank], a.get("dilations", 1),
                ceil_mode=bool(a.get("ceil_mode", 0)))


@op("AveragePool")
def average_pool(a: dict, xs: list) -> Tensor:
    x, kernel = xs[0], a["kernel_shape"]
    pads = _window_pads(a, x, kernel)
    rank = len(kernel)
    include = bool(a.get("count_include_pad", 0))
    if pads[:rank] != pads[rank:]:
        if not include:
            raise NotImplementedError("AveragePool with asymmetric pads excluded from the count")
        x, pads = F.pad(x, _torch_pad(pads)), [0] * (2 * rank)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
    return pool(x, kernel, a.get("strides", kernel), pads[:rank], ceil_mode=bool(a.get("ceil_mode", 0)),
                count_include_pad=include)


@op("Flatten")
def flatten(a: dict, xs: list) -> Tensor:
    axis = a.get("axis", 1) % max(xs[0].dim(), 1)
    return xs[0].reshape(int(math.prod(xs[0].shape[:axis])), -1)


@op("Reshape")
def reshape(a: dict, xs: list) -> Tensor:
    x, shape = xs[0], _ints(xs[1]) or []
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    # Exports of batch-1 graphs hard-code the batch in reshape targets ([1, -1, 4]); training feeds
    # batches, so a leading 1 that is the batch stays the batch.
    if shape and shape[0] == 1 and x.dim() > 0 and x.shape[0] > 1:
        shape[0] = x.shape[0]
    return x.reshape(shape)


@op("Transpose")
def transpose(a: dict, xs: list) -> Tensor:
    perm = a.get("perm", list(reversed(range(xs[0].dim()))))
    return xs[0].permute(*perm)


@op("Concat")
def concat(a: dict, xs: list) -> Tensor:
    return torch.cat([x for x in xs if x is not None and x.numel() > 0], dim=a["axis"])


@op("Squeeze")
def squeeze(a: dict, xs: list) -> Tensor:
    axes = _ints(xs[1]) if len(xs) > 1 and xs[1] is not None else a.get("axes")
    if axes is None:
        return xs[0].squeeze()
    return xs[0].squeeze(tuple(axes))


@op("Unsqueeze")
def unsqueeze(a: dict, xs: list) -> Tensor:
    axes = _ints(xs[1]) if len(xs) > 1 and xs[1] is not None else a.get("axes")
    x = xs[0]
    rank = x.dim() + len(axes)
    for axis in sorted(ax % rank for ax in axes):
        x = x.unsqueeze(axis)
    return x


@op("Pad")
def pad(a: dict, xs: list) -> Tensor:
    x = xs[0]
    pads = _ints(xs[1]) if len(xs) > 1 and xs[1] is not None else a.get("pads")
    value = float(xs[2]) if len(xs) > 2 and xs[2] is not None and xs[2].numel() else a.get("value", 0.0)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    axes = _ints(xs[3]) if len(xs) > 3 and xs[3] is not None else list(range(x.dim()))
    full = [0] * (2 * x.dim())
    for i, axis in enumerate(axes):
        full[axis % x.dim()], full[axis % x.dim() + x.dim()] = pads[i], pads[i + len(axes)]
    torch_pads = _torch_pad(full)
    # F.pad pads from the last axis; drop leading all-zero axes (non-constant modes pad spatial axes only).
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[mode]
    return F.pad(x, torch_pads, mode=mode, value=value) if mode == "constant" else F.pad(x, torch_pads, mode=mode)


@op("Resize")
def resize(a: dict, xs: list) -> Tensor:
    x = xs[0]
    scales = xs[2] if len(xs) > 2 and xs[2] is not None and xs[2].numel() else None
    sizes = _ints(xs[3]) if len(xs) > 3 and xs[3] is not None else None
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    transform = a.get("coordinate_transformation_mode", b"half_pixel")
    transform = transform.decode() if isinstance(transform, bytes) else transform
    size = sizes[2:] if sizes else [int(math.floor(n * float(s))) for n, s in zip(x.shape[2:], scales.tolist()[2:])]
    if mode == "nearest":
        # asymmetric + floor is torch's "nearest"; the half-pixel variants are "nearest-exact".
        exact = transform != "asymmetric"
        return F.interpolate(x, size=size, mode="nearest-exact" if exact else "nearest")
    linear = {3: "linear", 4: "bilinear", 5: "trilinear"}[x.dim()]
    if transform == "align_corners":
        return F.interpolate(x, size=size, mode=linear, align_corners=True)
    if transform in ("half_pixel", "pytorch_half_pixel"):
        return F.interpolate(x, size=size, mode=linear, align_corners=False)
    raise NotImplementedError(f"Resize mode {mode} with coordinate_transformation_mode {transform}")
