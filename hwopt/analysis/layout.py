"""Where a runtime converts tensors between a blocked and the plain layout inside a model.

onnxruntime's CPU provider (``ORT_ENABLE_ALL``) runs convs, pools and a few
other ops in the blocked NCHWc layout (channels in blocks of 8 with AVX2, 16
with AVX-512) and inserts ``ReorderInput`` / ``ReorderOutput`` nodes where a
tensor passes between a blocked op and one that only runs in the plain NCHW
layout (a broadcasting Mul of squeeze-excite, Softmax, Gemm after a Flatten,
Resize with non-integer scales...). Those conversions are real in-model costs
that no isolated kernel pays: MobileNetV3-Small has 30 of them around its
squeeze-excite Muls, about 9% of its latency, MobileNetV2 one.

``mark_reorders`` predicts them from the schedule, following onnxruntime's
NCHWc transformer rules (onnxruntime/core/optimizer/nchwc_transformer.cc):

- Conv, group 1: blocked when its input channels are a multiple of 4 (padded
  to the block) or fewer than a block (it then reads the plain input
  directly); any output count is padded (ConvTranspose: plain). Depthwise Conv: blocked when its
  channels are a multiple of 4. Grouped Conv: plain. (Seen with onnxruntime
  1.32: ShuffleNetV2's 58-channel convs stay plain, 60 or 64->58 are blocked.)
- MaxPool/AveragePool/GlobalAveragePool/GlobalMaxPool: blocked when the
  channels are a multiple of the block (pools are not padded).
- Add/Sum of same-shape blocked inputs, Concat (channel axis) of blocked inputs
  whose channels are multiples of the block, Relu/Sigmoid/Tanh/LeakyRelu/Clip/
  HardSigmoid of a blocked input, Resize/Upsample of a blocked input by
  integer scales (nearest with asymmetric coordinates, or linear): blocked.
- Everything else (views included): plain. Graph inputs are plain, blocked
  graph outputs are converted back.

A tensor is converted once per layout it is needed in (onnxruntime reuses the
converted tensor for every consumer). The conversion is attributed to a kernel
so the per-kernel figures (and the search's kernel tables) carry it: a
blocked-to-plain conversion to the kernel that wrote the tensor
(``Kernel.reorder_out``), a plain-to-blocked one to the first blocked kernel
that reads it (``Kernel.reorder_in``: a conv or a pool, the blocked kernels
whose layout does not follow their input's). Checked against the graphs
onnxruntime really runs in tests/analysis/test_layout.py.
"""

from __future__ import annotations

from dataclasses import replace

from hwopt.analysis.kernel import Kernel, Schedule

NCHWC = "onnxruntime-nchwc"  # the one blocked layout known (target files name it in [fusion] blocked_layout)
LAYOUTS = ("", NCHWC)
_BLOCKED_ACT = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "HardSigmoid"}
_BLOCKED_POOL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}


def block_size(layout: str) -> int:
    """Channels per block of ``layout`` on this machine."""
    if layout != NCHWC:
        raise ValueError(f"unknown blocked layout {layout!r}")
    from hwopt.backends.ort_boundary import nchwc_block  # probes onnxruntime once

    return nchwc_block()


def _resize_blockable(node) -> bool:
    """onnxruntime's blocked Upsample: nearest with asymmetric coordinates, or linear (asymmetric, align_corners
    or half_pixel coordinates; seen on torch's bilinear exports)."""
    def text(name: str, default: str) -> str:
        value = node.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else str(value)

    mode = text("mode", "nearest")
    coordinates = text("coordinate_transformation_mode", "asymmetric" if node.op == "Upsample" else "half_pixel")
    return (mode == "nearest" and coordinates == "asymmetric") or (
        mode == "linear" and coordinates in ("asymmetric", "align_corners", "half_pixel"))


def _blocked(kernel: Kernel, node, in_layouts: list[bool], in_channels: list[int], same_shapes: bool,
             block: int) -> bool:
    """Whether onnxruntime runs this kernel in the blocked layout (module docstring)."""
    kind, op = kernel.kind, node.op
    if op == "ConvTranspose":
        return False  # the NCHWc transformer rewrites Conv only
    if kind == "conv":  # padded to the block from a multiple of 4 input channels, or reads the plain input
        return kernel.cin < block or kernel.cin % 4 == 0
    if kind == "dwconv":
        return kernel.cin % 4 == 0
    if kind in ("pool", "reduce"):
        return op in _BLOCKED_POOL and kernel.cin % block == 0  # pools are not padded
    if not in_layouts or not all(in_layouts):
        return False
    if kind == "eltwise":
        return op in ("Add", "Sum") and same_shapes
    if kind == "act":
        return op in _BLOCKED_ACT
    if kind == "concat":
        return op == "Concat" and all(c % block == 0 for c in in_channels)
    if kind == "resize":
        return (kernel.out_h % max(kernel.h, 1) == 0 and kernel.out_w % max(kernel.w, 1) == 0
                and _resize_blockable(node))
    return False


def _wants_blocked_input(kernel: Kernel, blocked: bool, block: int) -> bool:
    """The layout a kernel reads its (first) input in: a blocked conv of fewer channels than a block reads plain."""
    return blocked and not (kernel.kind == "conv" and kernel.cin < block)


def mark_reorders(sched: Schedule, nodes: list, shapes: dict[str, tuple], layout: str) -> int:
    """Set ``reorder_in``/``reorder_out`` on the kernels of ``sched`` (in place); returns the conversions.

    ``nodes``: each kernel's first node (onnx-graphsurgeon); ``shapes``: tensor name -> shape (to tell
    a broadcasting Add from a same-shape one, and a Concat's input channels).
    """
    if not layout:
        return 0
    block = block_size(layout)
    producer: dict[str, int] = {}
    is_blocked: dict[str, bool] = {}  # tensor -> written in the blocked layout
    converted: set[tuple[str, bool]] = set()
    reorder_in: set[int] = set()
    reorder_out: set[int] = set()

    def need(tensor: str, want_blocked: bool, consumer: int) -> None:
        have = is_blocked.get(tensor, False)
        if have == want_blocked or (tensor, want_blocked) in converted:
            return
        converted.add((tensor, want_blocked))
        if want_blocked:
            reorder_in.add(consumer)
        elif tensor in producer:
            reorder_out.add(producer[tensor])

    for index, (sk, node) in enumerate(zip(sched.kernels, nodes)):
        inputs = sk.inputs
        in_layouts = [is_blocked.get(t, False) for t in inputs]
        in_shapes = [tuple(shapes.get(t, ())) for t in inputs]
        in_channels = [int(s[1]) if len(s) == 4 and isinstance(s[1], int) else 0 for s in in_shapes]
        blocked = _blocked(sk.kernel, node, in_layouts, in_channels, len(set(in_shapes)) <= 1, block)
        wants = _wants_blocked_input(sk.kernel, blocked, block)
        for tensor in inputs:
            need(tensor, wants, index)
        producer[sk.output] = index
        is_blocked[sk.output] = blocked
    for tensor in sched.outputs:
        need(tensor, False, -1)
    for index in reorder_in | reorder_out:
        sk = sched.kernels[index]
        sk.kernel = replace(sk.kernel, reorder_in=index in reorder_in, reorder_out=index in reorder_out)
    return len(converted)


def reorder_bytes(kernel: Kernel) -> tuple[int, int]:
    """(conversions, bytes converted) that the kernel carries: its input's and/or its output's."""
    count = size = 0
    if kernel.reorder_in:
        count += 1
        size += kernel.cin * kernel.h * kernel.w * kernel.dtype_bytes
    if kernel.reorder_out:
        count += 1
        size += kernel.out_elements * kernel.dtype_bytes
    return count, size
