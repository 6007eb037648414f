"""The objective: lowest estimated latency within the budgets.

Latency and memory budgets are checked on every variant (from the kernel
scores). Task fidelity and rel-L2 have no estimator: when the search is given
predicted figures (``predicted_fidelity``, ``predicted_rel_l2`` from
``hwopt.search.sensitivity``) their limits are constraints like the others; the
real figures are checked on the materialised finalists (``hwopt.search.optimize``).
Infeasible variants rank after every feasible one, by how far they miss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwopt.errors import HwoptError
from hwopt.units import split_quantity

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_TIME_UNITS = {"": 1.0, "us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1e6}
INFEASIBLE = 1e15


def parse_bytes(text: str) -> int:
    """'4MiB', '3.5 MB', '1500000B' -> bytes. A bare number is refused, as latencies are: '4' read as 4 bytes
    surprised users who meant MiB."""
    quantity = split_quantity(text)
    if quantity is not None and not quantity[1]:
        raise HwoptError(f"memory size {text!r} has no unit: write it with one (B, KiB, MiB, GiB, KB, MB, GB), "
                         f"e.g. {text.strip()}MiB")
    if quantity is None or quantity[1] not in _SIZE_UNITS:
        raise HwoptError(f"bad memory size {text!r}: expected a number with a unit "
                         f"(B, KB, MB, GB, KiB, MiB, GiB), e.g. 4MiB")
    value = int(quantity[0] * _SIZE_UNITS[quantity[1]])
    if value <= 0:
        raise HwoptError(f"bad memory size {text!r}: must be positive")
    return value


def parse_latency(text: str) -> float:
    """'2.5ms', '800us', '0.01s' -> microseconds. A bare number is refused: '2' read as 2 us surprised users
    who meant milliseconds."""
    quantity = split_quantity(text)
    if quantity is not None and not quantity[1]:
        raise HwoptError(f"latency {text!r} has no unit: write it with one (us, ms or s), e.g. {text.strip()}ms")
    if quantity is None or quantity[1] not in _TIME_UNITS:
        raise HwoptError(f"bad latency {text!r}: expected a number with a unit (us, ms, s), e.g. 2.5ms")
    value = quantity[0] * _TIME_UNITS[quantity[1]]
    if not 0 < value < math.inf:
        raise HwoptError(f"bad latency {text!r}: must be positive")
    return value


def within(value: float, limit: float | None) -> bool:
    """``value <= limit`` (no limit: always), where NaN or Inf never is: a failed figure is a failure."""
    return math.isfinite(value) and (limit is None or value <= limit)


@dataclass
class Budgets:
    max_memory: int | None = None  # bytes: parameters + peak activations at the target's dtype
    max_latency: float | None = None  # microseconds (estimated)
    max_deviation: float | None = None  # worst relative L2 error over the outputs, vs the original

    def __post_init__(self) -> None:
        # Zero would divide by zero in the violation; NaN would compare False against every figure.
        for name, value in (("--max-memory", self.max_memory), ("--max-latency", self.max_latency)):
            if value is not None and not 0 < value < math.inf:
                raise HwoptError(f"{name} must be positive, got {value}")
        if self.max_deviation is not None and not 0 <= self.max_deviation < math.inf:
            raise HwoptError(f"--max-deviation must be a finite number >= 0, got {self.max_deviation}")

    def to_dict(self) -> dict:
        return {"max_memory_bytes": self.max_memory, "max_latency_us": self.max_latency,
                "max_deviation": self.max_deviation}


@dataclass
class Objective:
    budgets: Budgets
    min_predicted_fidelity: float | None = None  # limit on figures["predicted_fidelity"], when present
    max_predicted_rel_l2: float | None = None  # limit on figures["predicted_rel_l2"], when present

    def violation(self, figures: dict[str, np.ndarray]) -> np.ndarray:
        """Relative excess over the latency, memory and predicted fidelity budgets (0 where within them; a non-finite
        figure is infinitely far, budget or not)."""
        latency = np.asarray(figures["latency_us"], dtype=np.float64)
        memory = np.asarray(figures["memory_bytes"], dtype=np.float64)
        excess = np.zeros(len(latency))
        if self.budgets.max_memory is not None:
            excess += np.maximum(memory / self.budgets.max_memory - 1.0, 0.0)
        if self.budgets.max_latency is not None:
            excess += np.maximum(latency / self.budgets.max_latency - 1.0, 0.0)
        if self.min_predicted_fidelity is not None and "predicted_fidelity" in figures:
            excess += np.maximum(self.min_predicted_fidelity - figures["predicted_fidelity"], 0.0) / max(
                self.min_predicted_fidelity, 1e-3)
        if self.max_predicted_rel_l2 is not None and "predicted_rel_l2" in figures:
            excess += np.maximum(figures["predicted_rel_l2"] / max(self.max_predicted_rel_l2, 1e-9) - 1.0, 0.0)
        # inf - inf (a decision that breaks the model, alone) must not read as feasible
        excess = np.nan_to_num(excess, nan=np.inf)
        finite = np.isfinite(latency) & np.isfinite(memory) & np.isfinite(excess)
        return np.where(finite, excess, np.inf)

    def fitness(self, figures: dict[str, np.ndarray]) -> np.ndarray:
        """Lower is better: latency when feasible, else after every feasible variant."""
        excess = self.violation(figures)
        return np.where(excess > 0, INFEASIBLE * (1.0 + np.minimum(excess, 1e6)), figures["latency_us"])

    def shortfall(self, figures: dict[str, float]) -> list[str]:
        """Which budgets a variant misses, and by how much (for the exit-1 message)."""
        lines = []
        b = self.budgets
        for key, label in (("latency_us", "latency"), ("memory_bytes", "memory")):
            if not math.isfinite(figures[key]):
                lines.append(f"its estimated {label} is not a finite number ({figures[key]})")
        if b.max_memory is not None and figures["memory_bytes"] > b.max_memory:
            lines.append(f"memory {figures['memory_bytes']:,.0f} B exceeds --max-memory {b.max_memory:,} B "
                         f"by {figures['memory_bytes'] - b.max_memory:,.0f} B "
                         f"({figures['memory_bytes'] / b.max_memory - 1:.1%})")
        if b.max_latency is not None and figures["latency_us"] > b.max_latency:
            lines.append(f"latency {figures['latency_us']:,.1f} us exceeds --max-latency {b.max_latency:,.1f} us "
                         f"by {figures['latency_us'] - b.max_latency:,.1f} us "
                         f"({figures['latency_us'] / b.max_latency - 1:.1%})")
        return lines
