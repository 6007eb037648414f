"""Analytic cost model of an accelerator's vector unit (every non-conv, non-gemm kernel).

SCALE-Sim only models the systolic array, so the kernels it cannot run
(elementwise, activations, pooling, reductions, resize, concat, softmax,
data movement) are costed by this model of the same target's vector unit.
Parameters come from the target file's ``[vector_unit]`` table:

- ``lanes`` (P): elements processed per cycle;
- ``bandwidth_bytes_per_cycle``: the DRAM bandwidth the array also has;
- ``launch_overhead_cycles``: fixed cost per standalone kernel;
- operations per element for each kind, and per activation in ``[vector_unit.act]``
  (``act_default`` for an activation not listed).

Per standalone kernel::

    compute = ceil(work_elements / lanes) * ops_per_element
    memory  = ceil(bytes / bandwidth)             bytes = (inputs read + output written + weights) * dtype bytes
    cycles  = max(compute, memory) + launch_overhead

where ``work_elements`` is: eltwise: output elements x (inputs - 1); act,
resize, concat, layout: output elements; pool: output elements x window
taps; reduce, softmax, norm: input elements; dwconv (only on a target of the
``depthwise = "vector"`` class, ``hwopt.targets.DEPTHWISE_CLASSES``): output
elements x K*K, the MACs of a depthwise conv (one input channel per output),
at ``dwconv`` ops per MAC (default 1), its bytes including the weights. Compute and memory overlap (double
buffering), hence the max. ``view`` kernels cost 0 cycles and 0 bytes: the
target declares them free (metadata only). ``unknown`` kernels raise: nothing
is silently counted as free.

An activation fused into a conv/gemm/eltwise kernel is applied to the
output on its way out of the array, so it moves no extra bytes and has no
launch cost: ``ceil(output elements / lanes) * ops(act)`` cycles, added
serially (conservative: no overlap with the array is assumed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hwopt.errors import HwoptError
from hwopt.analysis.kernel import CONV_KINDS, Kernel

VECTOR_KINDS = ("eltwise", "act", "pool", "reduce", "resize", "concat", "softmax", "layout", "norm")
# Kinds added after target files were written: their ops per element when a target does not say.
_DEFAULT_OPS = {"norm": 8.0, "dwconv": 1.0}
# Array kinds a vector unit can run instead, on a target whose hardware class says so.
VECTOR_CAPABLE = ("dwconv",)
_REQUIRED = ("lanes", "bandwidth_bytes_per_cycle", "launch_overhead_cycles") + tuple(
    k for k in VECTOR_KINDS if k != "act" and k not in _DEFAULT_OPS)


@dataclass(frozen=True)
class VectorCost:
    cycles: int
    dram_bytes: int
    compute_cycles: int
    memory_cycles: int


class VectorUnit:
    """The vector-unit model of one target (its ``[vector_unit]`` table)."""

    def __init__(self, params: dict[str, Any], dtype_bytes: int) -> None:
        missing = [key for key in _REQUIRED if key not in params]
        if missing:
            raise HwoptError(f"target's [vector_unit] lacks {missing[0]!r}")
        self.lanes = int(params["lanes"])
        self.bandwidth = float(params["bandwidth_bytes_per_cycle"])
        self.overhead = int(params["launch_overhead_cycles"])
        if self.lanes < 1 or self.bandwidth <= 0 or self.overhead < 0:
            raise HwoptError("target's [vector_unit]: lanes and bandwidth must be positive, overhead >= 0")
        self.ops = {kind: float(params.get(kind, _DEFAULT_OPS.get(kind, 0.0)))
                    for kind in VECTOR_KINDS + VECTOR_CAPABLE if kind != "act"}
        self.act_ops = {str(k).lower(): float(v) for k, v in dict(params.get("act", {})).items()}
        self.act_default = float(params.get("act_default", 4))
        self.dtype_bytes = dtype_bytes

    def activation_ops(self, act: str) -> float:
        """Ops per element of an activation chain such as ``"relu6"`` or ``"clip+mul"``."""
        return sum(self.act_ops.get(part.lower(), self.act_default) for part in act.split("+") if part)

    def fused_activation_cycles(self, kernel: Kernel) -> int:
        """Cycles of the activation fused into a conv/gemm/eltwise kernel (0 without one)."""
        if not kernel.act:
            return 0
        return math.ceil(math.ceil(kernel.out_elements / self.lanes) * self.activation_ops(kernel.act))

    def _work(self, kernel: Kernel) -> tuple[int, float]:
        """(elements the lanes process, ops per element) for a standalone kernel."""
        kind = kernel.kind
        if kind == "eltwise":
            return kernel.out_elements * max(kernel.inputs - 1, 1), self.ops["eltwise"]
        if kind == "act":
            return kernel.out_elements, self.activation_ops(kernel.op or "act")
        if kind == "pool":
            return kernel.out_elements * kernel.kernel * kernel.kw, self.ops["pool"]
        if kind in ("reduce", "softmax", "norm"):
            return kernel.in_elements, self.ops[kind]
        if kind == "dwconv":  # K*K MACs per output element (one input channel each)
            return kernel.out_elements * kernel.kernel * kernel.kw, self.ops["dwconv"]
        return kernel.out_elements, self.ops[kind]  # resize, concat, layout

    def cost(self, kernel: Kernel) -> VectorCost:
        """Cycles and DRAM bytes of one non-conv kernel (plus its fused activation, if any)."""
        if kernel.kind == "view":
            return VectorCost(0, 0, 0, 0)
        if kernel.kind == "unknown":
            raise HwoptError(f"the npu vector unit cannot cost op {kernel.op or '?'!r} (kind 'unknown')")
        if kernel.kind not in VECTOR_KINDS + VECTOR_CAPABLE:
            what = "the systolic array" if kernel.kind in CONV_KINDS + ("gemm",) else "no model"
            raise HwoptError(f"kernel kind {kernel.kind!r} is not a vector-unit kernel (it belongs to {what})")
        elements, ops = self._work(kernel)
        compute = math.ceil(math.ceil(elements / self.lanes) * ops)
        dram = (kernel.in_elements + kernel.out_elements + kernel.weight_elements) * self.dtype_bytes
        memory = math.ceil(dram / self.bandwidth)
        cycles = max(compute, memory) + self.overhead + self.fused_activation_cycles(kernel)
        return VectorCost(cycles, dram, compute, memory)
