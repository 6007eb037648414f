"""Exact memory of a scheduled model in the target's layout: parameters and peak live activations.

The target stores tensors in its own dtype (``dtype_bytes``) with channels
padded to a multiple of P (the lanes work on P channels at once), so both
figures are computed from element counts, not from the ONNX file's dtype:

- parameters: every conv/gemm kernel's weights and bias, output channels (and
  the input channels of a dense conv) padded to P;
- activations: the peak over the execution order of the live buffers
  (``hwopt.analysis.kernels.peak_live_bytes``, which frees a tensor after its last
  reader and lets views alias their input), kernel outputs padded to P.
  Graph inputs are counted unpadded (the first layer reads the image as is).
"""

from __future__ import annotations

from hwopt.analysis.kernels import pad_channels, peak_live_bytes
from hwopt.analysis.kernel import CONV_KINDS, Kernel, Schedule


def param_elements(k: Kernel, p: int = 1) -> int:
    """Weights + bias of one kernel in the target layout (0 for kinds without parameters)."""
    if k.kind in CONV_KINDS:
        groups = max(k.groups, 1)
        if groups == 1:
            return pad_channels(k.cout, p) * pad_channels(k.cin, p) * k.kernel * k.kw + pad_channels(k.cout, p)
        return pad_channels(k.cout, p) * (k.cin // groups) * k.kernel * k.kw + pad_channels(k.cout, p)
    if k.kind == "gemm":
        if k.activation_operand:  # attention's Q @ K^T: both operands are activations
            return 0
        return (max(k.groups, 1) * pad_channels(k.cout, p) * pad_channels(k.cin, p)) + pad_channels(k.cout, p)
    return 0


def param_bytes(sched: Schedule, p: int, dtype_bytes: int) -> int:
    return sum(param_elements(sk.kernel, p) for sk in sched.kernels) * dtype_bytes


def peak_activation_bytes(sched: Schedule, p: int, dtype_bytes: int) -> int:
    """Peak live activation bytes with channels padded to P, at the target's dtype."""
    return peak_live_bytes(sched, pad_channels_to=p, dtype_bytes=dtype_bytes)


def basis(p: int, dtype: str) -> str:
    """How the target-layout figures are counted, said beside them (``inspect`` counts the file as stored)."""
    return (f"target layout: {dtype}, channels padded to P={p}; activations = peak of the fused kernels' "
            f"outputs, each freed after its last reader")


FILE_BASIS = ("as stored in the file: its dtype, no padding; activations = peak of every node's output, "
              "unfused, each freed after its last reader")
