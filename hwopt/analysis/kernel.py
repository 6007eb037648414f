"""Kernel descriptors: what a target executes, as light, hashable geometry.

A ``Kernel`` is what the measurement backends time and the estimator scores:
an op kind and its geometry, nothing else, so equal kernels share one
measurement and one prediction (it is hashable and used as a cache key). A
``ScheduledKernel`` places one kernel in a model: which nodes it covers and
which tensors it reads and writes (for memory accounting and for attributing
latency to blocks).

Kinds:

======== ================================================================
conv     standard conv (group 1), any KxK, with its fused activation
dwconv   depthwise conv (group == channels), with its fused activation
gconv    grouped conv (1 < group < channels)
gemm     Gemm / MatMul: ``batch`` rows of ``cin`` -> ``cout``; a batched MatMul of ``groups``
         independent products (attention's heads: Q @ K^T, P @ V) has ``batch`` rows in all
         (``batch / groups`` each) and ``inputs`` 2 when its second operand is an activation
eltwise  elementwise op of ``inputs`` tensors (Add, Mul, ...), fused act
act      a standalone activation or per-channel affine op
pool     MaxPool / AveragePool, ``kernel`` x ``kernel`` window
reduce   global pooling and spatial reductions (GAP, ReduceMean, ...)
resize   Resize / Upsample from (h, w) to (out_h, out_w)
concat   Concat of ``inputs`` tensors into ``cout`` channels
softmax  Softmax / LogSoftmax: ``h`` rows of ``cout`` values each (the softmax axis)
norm     LayerNormalization (or its exporter decomposition, ``hwopt.analysis.layer_norm``): ``h`` rows of
         ``cout`` values each, with its affine
layout   data movement: Transpose, Pad, Slice, Split, Gather, Tile, ...
view     metadata only: Reshape, Flatten, Squeeze, Unsqueeze, Identity, ...
======== ================================================================

A ``ConvTranspose`` (stride s, kernel k) is described as the conv it is
computed as, its sub-pixel decomposition: ``cin`` -> ``cout * s_h * s_w``
channels, kernel ``ceil(k / s)``, stride 1, over the (un-inflated) input, one
output pixel per s_h x s_w block of the real output; ``op`` is
``ConvTranspose`` (``transposed_conv_kernel``, docs/estimator.md).

Any other op becomes kind ``unknown`` with ``op`` set: the estimator refuses
it (or applies an explicit, reported fallback); it is never counted as free.
Tensors that are not 4-D NCHW are described as ``cin``/``cout`` values per
sample with h = w = 1. All figures are per sample (batch 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


# The order is the regressors' kind code: new kinds go before "unknown" (never a training row).
KINDS = ("conv", "dwconv", "gconv", "gemm", "eltwise", "act", "pool", "reduce", "resize", "concat", "softmax",
         "layout", "view", "norm", "unknown")
CONV_KINDS = ("conv", "dwconv", "gconv")


@dataclass(frozen=True)
class Kernel:
    """One kernel's geometry: what a backend measures and the estimator scores."""

    kind: str
    cin: int
    cout: int
    h: int = 1  # input height
    w: int = 1  # input width
    out_h: int = 1
    out_w: int = 1
    kernel: int = 1  # window height (square windows; kw kept separately for the rare non-square)
    kw: int = 1
    stride: int = 1
    groups: int = 1
    act: str = ""  # fused activation kind ("" = none)
    inputs: int = 1  # tensors read (eltwise, concat)
    batch: int = 1  # gemm rows
    op: str = ""  # the ONNX op for act/eltwise/layout/unknown kernels
    dtype_bytes: int = 4
    # Percent of the weights (conv/gemm) that quantise to zero in symmetric per-channel int8, in steps of
    # 10: pruned weights. An NPU compiler that encodes the weights it streams (Vela's weight codec on
    # Ethos-U) moves a pruned kernel's weights in a fraction of the bytes (MediaPipe's pose detector, 70%
    # zeros, encodes to 0.40 of its int8 size; dense weights to 0.87-1.0), so on a weight-bound target
    # the same geometry runs faster. 0 for other kinds and for weights hwopt cannot read.
    weight_zeros: int = 0
    # A conv's dilation (1 when every off-centre tap only reads padding: described as the 1x1 conv it computes).
    # Vela runs dilation 2 natively but splits a larger one into (dilation / gcd(dilation, stride))^2 convs
    # over strided sub-grids of the map, each with the weights (regor's HandleDilation): CRAFT's link refiner,
    # dilations 6-24 at 480x640, costs 12-228 s on Ethos-U, 14-100x its undilated convs.
    dilation: int = 1
    # 1 when the kernel reads a graph input itself (the stem conv of an NCHW export). Where the arena is in
    # DRAM behind an SRAM cache (Vela's Dedicated_Sram: U65, U85) such a kernel streams its input from DRAM:
    # a 7x7 stride-2 3->64 conv at 224x224 costs 4.5 ms on ethos-u65-256 reading the input, 1.3 ms after the
    # input Transpose of an NHWC export (tf2onnx) has copied it (ethos-u55-256, Shared_Sram: 2.6 ms either way).
    graph_input: int = 0
    # Layout conversions this kernel pays inside its model (hwopt.analysis.layout): not part of what a
    # backend measures in isolation, so the estimator costs them on top of the kernel.
    reorder_in: bool = False
    reorder_out: bool = False

    def isolated(self) -> "Kernel":
        """The kernel as a backend measures it alone (without its in-model layout conversions)."""
        return replace(self, reorder_in=False, reorder_out=False) if self.reorder_in or self.reorder_out else self

    @property
    def macs(self) -> int:
        """Multiply-accumulates (conv/gemm); 0 for other kinds."""
        if self.kind in CONV_KINDS:
            return self.cout * self.out_h * self.out_w * (self.cin // max(self.groups, 1)) * self.kernel * self.kw
        if self.kind == "gemm":
            return self.batch * self.cin * self.cout
        return 0

    @property
    def flops(self) -> int:
        if self.macs:
            return 2 * self.macs
        return self.out_elements * max(self.inputs - 1, 1) if self.kind not in ("view", "layout") else 0

    @property
    def in_elements(self) -> int:
        if self.kind == "gemm":  # the first operand; the second is counted with the weights
            return self.cin * self.batch
        per_input = self.cin * self.h * self.w
        return per_input * (1 if self.kind == "concat" else self.inputs)

    @property
    def out_elements(self) -> int:
        return self.cout * self.out_h * self.out_w * (self.batch if self.kind == "gemm" else 1)

    @property
    def weight_elements(self) -> int:
        """The operand an array holds stationary: conv/gemm weights and bias; for a product of two
        activations (a gemm with ``inputs`` 2) its second operand, one matrix per group (no parameter)."""
        if self.kind in CONV_KINDS:
            return self.cout * (self.cin // max(self.groups, 1)) * self.kernel * self.kw + self.cout
        if self.kind == "gemm":
            matrices = max(self.groups, 1) * self.cin * self.cout
            return matrices if self.activation_operand else matrices + self.cout
        return 0

    @property
    def activation_operand(self) -> bool:
        """A gemm whose second operand is computed by the model (attention's K and V), not a weight."""
        return self.kind == "gemm" and self.inputs > 1

    def describe(self) -> str:
        if self.kind in CONV_KINDS:
            text = f"{self.kind}{'[' + self.op + ']' if self.op else ''} {self.cin}->{self.cout} k{self.kernel}" + (
                f"x{self.kw}" if self.kw != self.kernel else "") + f" s{self.stride} @{self.h}x{self.w}"
            if self.kind == "gconv":
                text += f" g{self.groups}"
            if self.dilation > 1:
                text += f" d{self.dilation}"
        elif self.kind == "gemm" and (self.groups > 1 or self.activation_operand):
            # attention's products: per group (head), rows x cin @ cin x cout
            rows = self.batch // max(self.groups, 1)
            text = f"matmul {self.groups}x({rows}x{self.cin} @ {self.cin}x{self.cout})"
        elif self.kind == "gemm":
            text = f"gemm {self.batch}x{self.cin}->{self.cout}"
        elif self.kind in ("softmax", "norm"):
            text = f"{self.kind}{'(' + self.op + ')' if self.op and self.op != 'Softmax' else ''} {self.h}x{self.cout}"
        elif self.kind in ("resize",):
            text = f"resize {self.cin} ch {self.h}x{self.w}->{self.out_h}x{self.out_w}"
        else:
            name = self.op or self.kind
            text = f"{self.kind}{'(' + name + ')' if name != self.kind else ''} {self.cout} ch @{self.out_h}x{self.out_w}"
        text += f" +{self.act}" if self.act else ""
        text += f" zeros {self.weight_zeros}%" if self.weight_zeros else ""
        text += " from the input" if self.graph_input else ""
        if self.reorder_in or self.reorder_out:
            text += " [reorder " + "+".join(w for w, on in (("in", self.reorder_in), ("out", self.reorder_out)) if on) + "]"
        return text


@dataclass(frozen=True)
class FusionPolicy:
    """What a target executes as one kernel (from its target file)."""

    activation: bool = True  # conv/eltwise + following activation chain
    activation_chain: bool = True  # the whole chain fuses (a vector unit's pipeline), else one activation
    view_ops_free: bool = True  # Reshape & co. are metadata: a 'view' kernel the target costs at zero
    blocked_layout: str = ""  # a runtime's blocked layout whose conversions inside a model are costed (hwopt.analysis.layout)
    # Activation kinds the target runs as passes of their own, never inside the conv/eltwise before them
    # (Vela lowers PReLU to MUL, MUL, MAXIMUM over the whole map: its per-layer report prices them apart).
    separate: tuple[str, ...] = ()
    # An elementwise op (Add, Sub, Mul, Max, Min; of two activations or by a constant) runs inside the kernel
    # Vela executes just before it, when that kernel writes its input for it alone (Ethos-U85's chaining:
    # hwopt.analysis.chaining); the kernel's act gains the op.
    chain_elementwise: bool = False
    # Pools and elementwise ops by a constant also run the activation after them (Vela fuses one activation
    # onto any NPU op); without it only convs, gemms and elementwise ops of two activations do.
    activation_into_any: bool = False
    # A Transpose read only by a Reshape-like op that moves no data in NHWC storage is a view: the target runs
    # hwopt's TFLite writer, which writes the pair as one RESHAPE (the Ethos-U targets).
    nhwc_views: bool = False


@dataclass
class ScheduledKernel:
    kernel: Kernel
    nodes: list[str]  # ONNX node names it covers, in order
    inputs: list[str]  # activation tensors it reads
    output: str  # the tensor it writes (the end of its fused chain)
    output_bytes: int = 0  # per sample, at the model's dtype


@dataclass
class Schedule:
    kernels: list[ScheduledKernel] = field(default_factory=list)
    input_bytes: dict[str, int] = field(default_factory=dict)  # graph inputs
    input_dtype_bytes: dict[str, int] = field(default_factory=dict)  # their element size (to rescale)
    outputs: list[str] = field(default_factory=list)  # graph outputs (live to the end)

    def by_node(self) -> dict[str, int]:
        return {name: index for index, sk in enumerate(self.kernels) for name in sk.nodes}
