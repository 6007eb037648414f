"""Fidelity without an estimator: each inexact decision's cost measured once, alone, then combined.

Latency has a per-kernel estimator; task fidelity has none. As mixed-precision
quantizers do per layer (HAWQ, AIMET), every inexact option of every decision is
materialised on its own (all other decisions as in the search's start), run on
the held-out samples and scored: its fidelity f_i and rel-L2 r_i. A variant's
fidelity is then predicted from the options it takes:

- ``log`` (default): additive in log-fidelity, f = f_0 * prod_i (f_i / f_0)
  (f_0: the start, 1 unless inexact rules are pinned) - independent failures;
- ``linear``: additive in infidelity (disagreement), f = f_0 - sum_i (f_0 - f_i);
- rel-L2: errors add as independent noise, r = sqrt(sum_i r_i^2).

Both models are tables of one number per (decision, option), so the search scores
a population with a gather-and-sum, like latency. Which model fits better is
measured on the trained case (``bench/fidelity_figures.py``, docs/optimize.md).
Exact options cost nothing and are not run; options that, alone, make the model
neither faster nor smaller are not run either and leave the fidelity-aware search
(they cannot pay for what they cost).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hwopt.search.space import Space
from hwopt.search.variants import VariantModel
from hwopt.search.verifier import Verifier

Progress = Callable[[str, int, int], None]
_FLOOR = 1e-4  # fidelity floor for the log model (a decision alone that breaks everything: cost ~9.2)
STAGE = "fidelity cost of each inexact decision (alone)"


@dataclass
class DecisionCost:
    var: int
    option: int
    site: str
    choice: str
    rule: str
    fidelity: float  # of the start with this one option, vs the original (NaN: non-finite outputs)
    rel_l2: float
    seconds: float

    def to_dict(self) -> dict:
        finite = lambda x: float(x) if math.isfinite(x) else None  # noqa: E731 - JSON has no NaN
        return {"site": self.site, "choice": self.choice, "rule": self.rule, "fidelity": finite(self.fidelity),
                "rel_l2": finite(self.rel_l2), "seconds": round(self.seconds, 2)}


class FidelityModel:
    """Predicted task fidelity and rel-L2 of variants (rows of option indices) from measured costs."""

    MODES = ("log", "linear")

    def __init__(self, space: Space, costs: list[DecisionCost], start_fidelity: float = 1.0,
                 start_rel_l2: float = 0.0, mode: str = "log") -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown fidelity model {mode!r}")
        self.space, self.costs, self.mode = space, costs, mode
        self.start_fidelity, self.start_rel_l2 = start_fidelity, start_rel_l2
        width = max((v.size for v in space.variables), default=1)
        self.cost = np.zeros((len(space.variables) + 1, width))  # the last row: padding for empty rows
        self.err2 = np.zeros_like(self.cost)
        f0 = max(start_fidelity, _FLOOR)
        for c in costs:
            bad = not (math.isfinite(c.fidelity) and math.isfinite(c.rel_l2))
            f = max(c.fidelity, _FLOOR) if not bad else _FLOOR
            if mode == "log":
                self.cost[c.var, c.option] = np.inf if bad else max(math.log(f0) - math.log(f), 0.0)
            else:
                self.cost[c.var, c.option] = np.inf if bad else max(start_fidelity - f, 0.0)
            self.err2[c.var, c.option] = np.inf if bad else max(c.rel_l2 ** 2 - start_rel_l2 ** 2, 0.0)
        self.measured = {(c.var, c.option) for c in costs}

    def with_mode(self, mode: str) -> "FidelityModel":
        """The same measured costs, combined the other way (to compare the models' fit)."""
        return FidelityModel(self.space, self.costs, self.start_fidelity, self.start_rel_l2, mode)

    def evaluate(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.arange(rows.shape[1])[None, :]
        total = self.cost[cols, rows].sum(axis=1) if rows.shape[1] else np.zeros(len(rows))
        err2 = self.err2[cols, rows].sum(axis=1) if rows.shape[1] else np.zeros(len(rows))
        if self.mode == "log":
            fidelity = self.start_fidelity * np.exp(-total)
        else:
            fidelity = np.maximum(self.start_fidelity - total, 0.0)
        return {"predicted_fidelity": fidelity,
                "predicted_rel_l2": np.sqrt(self.start_rel_l2 ** 2 + err2)}

    def predict(self, decisions: tuple[int, ...]) -> tuple[float, float]:
        figures = self.evaluate(np.array([decisions], dtype=np.int64))
        return float(figures["predicted_fidelity"][0]), float(figures["predicted_rel_l2"][0])

    def allowed(self) -> list[list[int]]:
        """Options the fidelity-aware search may take: exact ones, pinned ones and the measured ones."""
        return [[i for i in v.allowed if v.pinned or v.options[i].exact or (vi, i) in self.measured]
                for vi, v in enumerate(self.space.variables)]


def worth_measuring(space: Space, vm: VariantModel) -> list[tuple[int, int]]:
    """Inexact (decision, option) pairs that, alone from the start, lower estimated latency or memory."""
    start = np.array(space.start, dtype=np.int64)
    pairs = [(vi, oi) for vi, v in enumerate(space.variables) if not v.pinned
             for oi in v.allowed if not v.options[oi].exact and oi != start[vi]]
    if not pairs:
        return []
    rows = np.repeat(start[None], len(pairs) + 1, axis=0)
    for k, (vi, oi) in enumerate(pairs, 1):
        rows[k, vi] = oi
    figures = vm.evaluate(rows)
    lat, mem = figures["latency_us"], figures["memory_bytes"]
    return [p for k, p in enumerate(pairs, 1) if lat[k] < lat[0] or mem[k] < mem[0]]


def measure_costs(space: Space, vm: VariantModel, verifier: Verifier,
                  progress: Progress | None = None) -> tuple[list[DecisionCost], float, float]:
    """Each worthwhile inexact option alone, materialised and scored; and the start's fidelity, rel-L2."""
    start = tuple(space.start)
    base = verifier.apply(space.steps(start), quiet=True).fidelity if not space.is_exact(start) else None
    pairs = worth_measuring(space, vm)
    costs = []
    for k, (vi, oi) in enumerate(pairs):
        if progress:
            progress(STAGE, k, len(pairs))
        decisions = list(start)
        decisions[vi] = oi
        var, option = space.variables[vi], space.variables[vi].options[oi]
        t0 = time.perf_counter()
        fid = verifier.apply(space.steps(tuple(decisions)), quiet=True).fidelity
        costs.append(DecisionCost(vi, oi, var.id, option.label, option.choice.rule if option.choice else "",
                                  fid.value, fid.rel_l2, time.perf_counter() - t0))
    if progress:
        progress(STAGE, len(pairs), len(pairs))
    return costs, (base.value if base else 1.0), (base.rel_l2 if base else 0.0)
