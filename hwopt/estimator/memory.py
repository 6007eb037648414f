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

On a target with a ``memory_budget_bytes`` (and ``offchip_bytes_per_us``), what
does not fit is streamed from DRAM on every inference (``on_chip``, ``POLICY``
below): ``hwopt measure``, ``hwopt estimate`` and the search add that charge
to the latency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


# -- on-chip memory across kernels ------------------------------------------------------------------
#
# Each kernel is measured as if its operands sat in the target's attached memory (SCALE-Sim's "DRAM" is
# that memory: its traffic is charged per kernel at the array's bandwidth). A target with a
# ``memory_budget_bytes`` holds only that much across kernels; what does not fit is streamed from
# external DRAM on every inference at ``offchip_bytes_per_us``. The policy, a simple static allocator:
#
# 1. the live activations are placed first, at their peak over the schedule: a spilled activation costs
#    two transfers (written out, read back), a weight one (read once per inference anyway);
# 2. the weights are made resident in schedule order in what remains; the rest are streamed, once each
#    per inference;
# 3. if the activation peak alone exceeds the budget, the excess is written out and read back once.
#
# The transfer is charged serially on top of the kernels (no overlap with compute assumed: conservative,
# and the same for the original and every variant).


@dataclass(frozen=True)
class OnChip:
    """Where a model's memory lives on a target with a budget, and what the rest costs per inference."""

    budget_bytes: int
    param_bytes: int
    activation_bytes: int  # peak live activations
    offchip_param_bytes: int
    offchip_activation_bytes: int  # of the peak: spilled, written and read back
    traffic_bytes: int  # per inference: off-chip weights once + spilled activations twice
    charge_us: float

    @property
    def onchip_bytes(self) -> int:
        return self.param_bytes + self.activation_bytes - self.offchip_param_bytes - self.offchip_activation_bytes

    @property
    def offchip_bytes(self) -> int:
        return self.offchip_param_bytes + self.offchip_activation_bytes

    def to_dict(self) -> dict:
        return {"budget_bytes": self.budget_bytes, "onchip_bytes": self.onchip_bytes,
                "offchip_bytes": self.offchip_bytes, "offchip_param_bytes": self.offchip_param_bytes,
                "offchip_activation_bytes": self.offchip_activation_bytes, "traffic_bytes": self.traffic_bytes,
                "charge_us": self.charge_us, "policy": POLICY}

    def describe(self) -> str:
        return describe_split(self.to_dict())


def describe_split(split: dict) -> str:
    """On-chip vs off-chip bytes and the charge of an ``OnChip.to_dict()``, in words."""
    mib = 1024 * 1024
    text = (f"on chip {split['onchip_bytes'] / mib:.2f} of {split['budget_bytes'] / mib:.2f} MiB, "
            f"off chip {split['offchip_bytes'] / mib:.2f} MiB")
    if split["traffic_bytes"]:
        text += f": {split['traffic_bytes'] / mib:.2f} MiB of DRAM traffic per inference, +{split['charge_us']:.1f} us"
    return text


POLICY = ("activations first (peak live), weights resident in schedule order in the rest; off-chip weights "
          "streamed once per inference, spilled activations written and read back; charged serially")


def offchip_traffic(param_bytes, activation_bytes, budget_bytes: int):
    """(off-chip weight bytes, spilled activation bytes, DRAM traffic bytes) per inference under ``POLICY``;
    vectorised (numpy arrays in, arrays out) for the search."""
    params = np.asarray(param_bytes, dtype=np.float64)
    acts = np.asarray(activation_bytes, dtype=np.float64)
    spilled = np.maximum(acts - budget_bytes, 0.0)
    left = np.maximum(budget_bytes - acts, 0.0)
    streamed = np.maximum(params - left, 0.0)
    return streamed, spilled, streamed + 2.0 * spilled


def memory_charge_us(param_bytes, activation_bytes, target) -> np.ndarray:
    """The per-inference off-chip charge (us) of a model's memory on a target (0 without a budget or bandwidth)."""
    if not target.memory_budget_bytes or not target.offchip_bytes_per_us:
        return np.zeros(np.shape(param_bytes))
    traffic = offchip_traffic(param_bytes, activation_bytes, target.memory_budget_bytes)[2]
    return traffic / target.offchip_bytes_per_us


def on_chip(param_bytes: int, activation_bytes: int, target) -> OnChip | None:
    """The split and charge of one model on a target; None when the target has no budget or no bandwidth."""
    if not target.memory_budget_bytes or not target.offchip_bytes_per_us:
        return None
    streamed, spilled, traffic = (int(v) for v in offchip_traffic(param_bytes, activation_bytes,
                                                                  target.memory_budget_bytes))
    return OnChip(target.memory_budget_bytes, int(param_bytes), int(activation_bytes), streamed, spilled, traffic,
                  float(traffic / target.offchip_bytes_per_us))

