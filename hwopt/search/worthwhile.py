"""Nothing inexact for noise: what a rewrite must buy before it is written.

An inexact decision costs fidelity (and fine-tuning); an estimated gain inside the
estimator's error, or of a few microseconds, buys nothing real. Three checks:

- **per inexact decision** (estimated): the chosen variant against the same
  variant with that one decision at its fastest exact option. The decision is
  kept only when its gain is at least the floor (``min_gain`` x the original's
  estimated latency; default 1%) *and* larger than the estimator's band: the
  band's low end of the kernels it removes minus the high end of the kernels it
  adds is above zero. Otherwise it is dropped (the smallest gain first, then the
  others are weighed again) unless dropping it breaks a latency or memory budget.
- **the whole variant** (estimated): the same test against the original. A
  variant that fails it is no worthwhile gain: nothing is written.
- **on measured targets** (``measure_finalists``: cpu): a paired, interleaved A/B
  (``hwopt.backends.ort_paired``) of the candidate against the original; it is
  taken only when the interval of the ratio excludes 1 (faster for real) and
  the measured gain reaches the floor.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwopt.search.objective import Objective

DEFAULT_MIN_GAIN = 0.01


@dataclass
class Gain:
    """What one change buys: its estimated gain and the low end of the band of that gain (us)."""

    gain_us: float
    low_us: float  # the gain's band, low end (= gain_us where the cost model has no band)
    banded: bool

    def worth(self, floor_us: float) -> bool:
        return self.gain_us >= floor_us and self.gain_us > 0 and self.low_us > 0

    def why_not(self, floor_us: float) -> str:
        if self.gain_us < floor_us or self.gain_us <= 0:
            return f"gains {self.gain_us:.1f} us, below the floor of {floor_us:.1f} us (--min-gain)"
        return (f"gains {self.gain_us:.1f} us, inside the estimator's 80% band (its low end "
                f"{self.low_us:+.1f} us)")

    def to_dict(self) -> dict:
        return {"gain_us": self.gain_us, "gain_low_us": self.low_us if self.banded else None}


@dataclass
class GainReport:
    """The report's account of the gain checks (JSON ``gain``)."""

    min_gain: float
    floor_us: float
    dropped: list[dict[str, Any]] = field(default_factory=list)  # inexact decisions dropped, and why
    paired: list[dict[str, Any]] = field(default_factory=list)  # measured A/B of candidates vs the original
    verdict: str | None = None  # "no worthwhile gain: ..." when nothing is written
    lowering: dict[str, Any] | None = None  # the lowerings tried on the pick (hwopt.search.lowerings)

    def to_dict(self) -> dict:
        return {"min_gain": self.min_gain, "floor_us": self.floor_us, "dropped": self.dropped,
                "paired": self.paired, "verdict": self.verdict, "lowering": self.lowering}


def change_gain(vm, cost_model, before: tuple[int, ...], after: tuple[int, ...]) -> Gain:
    """What going from ``before`` to ``after`` buys (estimated), with the band of the kernels that differ."""
    lat = vm.latency(np.array([before, after], dtype=np.int64))
    gain = float(lat[0] - lat[1])
    old = collections.Counter(k for k in vm.kernels(before) if k is not None)
    new = collections.Counter(k for k in vm.kernels(after) if k is not None)
    removed, added = list((old - new).elements()), list((new - old).elements())
    estimator = getattr(cost_model, "estimator", None)
    if estimator is None or not (removed or added):
        return Gain(gain, gain, False)
    bands = [estimator.interval(kernels) if kernels else (np.zeros(0), np.zeros(0), None) for kernels in
             (removed, added)]
    if any(b is None for b in bands):
        return Gain(gain, gain, False)
    (removed_low, _, _), (_, added_high, _) = bands
    return Gain(gain, float(np.sum(removed_low) - np.sum(added_high)), True)


def _exact_alternative(space, vm, decisions: tuple[int, ...], vi: int) -> tuple[int, ...]:
    """``decisions`` with variable ``vi`` at its fastest exact option."""
    var = space.variables[vi]
    options = [i for i in var.allowed if var.options[i].exact]
    rows = np.repeat(np.array([decisions], dtype=np.int64), len(options), axis=0)
    rows[:, vi] = options
    best = rows[int(np.argmin(vm.latency(rows)))]
    return tuple(int(x) for x in best)


def drop_noise(space, vm, cost_model, budgets, decisions: tuple[int, ...], floor_us: float
               ) -> tuple[tuple[int, ...], list[dict[str, Any]]]:
    """``decisions`` without the inexact decisions that buy less than the floor or their band (module doc)."""
    objective = Objective(budgets)
    dropped: list[dict[str, Any]] = []
    current = tuple(decisions)
    while True:
        weak = []
        for vi, var in enumerate(space.variables):
            if var.pinned or var.options[current[vi]].exact:
                continue
            alt = _exact_alternative(space, vm, current, vi)
            figures = {k: float(v[0]) for k, v in vm.evaluate(np.array([alt])).items()}
            if objective.shortfall(figures):
                continue  # the decision keeps a latency or memory budget: it buys that
            gain = change_gain(vm, cost_model, alt, current)
            if not gain.worth(floor_us):
                weak.append((gain.gain_us, vi, alt, gain))
        if not weak:
            return current, dropped
        _, vi, alt, gain = min(weak, key=lambda w: w[0])
        var = space.variables[vi]
        dropped.append({"site": var.id, "choice": var.options[current[vi]].label,
                        "instead": var.options[alt[vi]].label, **gain.to_dict(), "why": gain.why_not(floor_us)})
        current = alt


def paired_verdict(canonical, model, target, min_gain: float) -> tuple[bool, dict[str, Any]]:
    """(taken, figures): ``model`` against the original, timed paired and interleaved on ``target``."""
    from hwopt.backends.ort_cpu import TimingSettings
    from hwopt.backends.ort_paired import paired_change

    change = paired_change(canonical, model, TimingSettings.from_target(target))
    taken = change.high < 1.0 and change.ratio <= 1.0 - min_gain
    if taken:
        why = "faster, the interval excludes no change"
    elif change.high >= 1.0:
        why = "not shown faster: the interval includes no change" if change.low < 1.0 else "slower"
    else:
        why = f"faster by less than the floor ({min_gain:.1%}, --min-gain)"
    return taken, {**change.to_dict(), "change": change.ratio - 1.0, "taken": taken, "why": why}
