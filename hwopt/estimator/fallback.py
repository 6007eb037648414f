"""The explicit fallback for kernels the estimator cannot score: a FLOPs/bytes roofline.

Never silent: the estimator refuses such kernels unless the caller allows the
fallback, and then every output lists them. The two throughputs are
calibrated on the training table (saved in the estimator's index), as the
90th percentile of FLOPs/us over array kernels and of bytes/us over the
other kinds, so the roofline is the optimistic side of what the target was
seen doing; a kernel with neither FLOPs nor bytes still costs one launch
(the table's 5th percentile latency), never zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from hwopt.analysis.kernel import CONV_KINDS, Kernel

_ARRAY = CONV_KINDS + ("gemm",)


@dataclass(frozen=True)
class Roofline:
    flops_per_us: float
    bytes_per_us: float
    floor_us: float

    @classmethod
    def fit(cls, kernels: Sequence[Kernel], latency_us: np.ndarray, dtype_bytes: int) -> "Roofline":
        lat = np.asarray(latency_us, dtype=np.float64)
        array = np.array([k.kind in _ARRAY for k in kernels])
        flops = np.array([k.flops for k in kernels], dtype=np.float64)
        moved = np.array([kernel_bytes(k, dtype_bytes) for k in kernels], dtype=np.float64)
        f = np.percentile(flops[array] / lat[array], 90) if array.any() else np.percentile(flops / lat, 90)
        b = np.percentile(moved[~array] / lat[~array], 90) if (~array).any() else np.percentile(moved / lat, 90)
        return cls(float(max(f, 1e-9)), float(max(b, 1e-9)), float(np.percentile(lat, 5)))

    def predict(self, kernels: Sequence[Kernel], dtype_bytes: int) -> np.ndarray:
        return np.array([max(k.flops / self.flops_per_us, kernel_bytes(k, dtype_bytes) / self.bytes_per_us,
                             self.floor_us) for k in kernels], dtype=np.float64)

    def to_dict(self) -> dict:
        return asdict(self)


def kernel_bytes(k: Kernel, dtype_bytes: int) -> int:
    """Bytes a kernel reads and writes (activations and weights) at the target's dtype."""
    return (k.in_elements + k.out_elements + k.weight_elements) * dtype_bytes
