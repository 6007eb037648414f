"""A fidelity budget is a statistical statement: the lower confidence bound of a held-out figure.

The held-out samples are a sample of the task's inputs; a figure measured on them
is an estimate. ``optimize`` admits an inexact variant only when the one-sided
lower confidence bound (default 95%) of its fidelity meets the budget:

- **agreement metrics** (``top1``, ``top5``): successes over independent units,
  Clopper-Pearson (exact binomial). An independent unit is a source group (the
  photo several crops came from: ``_group`` in an .npz, the file in a folder) or,
  without groups, one sample. A unit counts as a success only when *every* one
  of its samples keeps the original's answer: P(all of a unit's samples agree)
  is at most the mean agreement of its samples, so the bound stays a lower bound
  of the per-sample figure however alike a unit's samples are.
  With n units and no miss the bound is (1 - confidence)^(1/n): 64 units prove
  95.4%, proving 99% takes 299.
- **continuous metrics** (``cosine``, per-pixel ``argmax``: a pixel is not an
  independent trial, ``rel-l2``): a seeded percentile bootstrap over units of the
  mean of the per-unit scores (``rel-l2``: of the ratio of the resampled sums).
  A bootstrap needs some spread to resample: fewer than ``MIN_BOOTSTRAP_UNITS``
  units prove nothing.

A model with several outputs is scored per sample by its worst output, so the
bound is one of the model's figure (the worst output's mean is at least the mean
of the per-sample worst).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP = 2000
MIN_BOOTSTRAP_UNITS = 10  # below this a percentile bootstrap badly under-covers


@dataclass(frozen=True)
class Bound:
    """The one-sided lower confidence bound of a fidelity figure and what it rests on."""

    lower: float  # NaN: non-finite outputs; 0.0 when nothing can be proved
    confidence: float
    units: int  # independent units the bound rests on
    method: str  # "clopper-pearson" | "bootstrap"
    successes: int | None = None  # agreement metrics: units whose every sample kept the original's answer

    def to_dict(self) -> dict:
        return {"lower_bound": self.lower if math.isfinite(self.lower) else None, "confidence": self.confidence,
                "independent_samples": self.units, "bound_method": self.method, "successes": self.successes}


def clopper_pearson_lower(successes: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson lower bound of a binomial proportion (0 when nothing succeeded)."""
    if n <= 0 or successes <= 0:
        return 0.0
    from scipy.stats import beta

    return float(beta.ppf(1.0 - confidence, successes, n - successes + 1))


def units_needed(min_fidelity: float, method: str, confidence: float = CONFIDENCE) -> int:
    """How many independent units, none of them a miss, prove ``min_fidelity`` at ``confidence``."""
    if method == "bootstrap":
        return MIN_BOOTSTRAP_UNITS
    if min_fidelity <= 0:
        return 1
    if min_fidelity >= 1:
        return math.inf  # type: ignore[return-value] - nothing finite proves a perfect score
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log(min_fidelity) - 1e-12))


def best_provable(units: int, method: str, confidence: float = CONFIDENCE) -> float:
    """The highest bound ``units`` independent units can give (every one of them perfect)."""
    if method == "bootstrap":
        return 1.0 if units >= MIN_BOOTSTRAP_UNITS else 0.0
    return clopper_pearson_lower(units, units, confidence)


def unit_index(count: int, groups: np.ndarray | None) -> tuple[np.ndarray, int]:
    """(unit of each sample, number of units): a group label each, or each sample its own unit."""
    if groups is None:
        return np.arange(count), count
    _, index = np.unique(np.asarray(groups), return_inverse=True)
    return index.reshape(-1), int(index.max()) + 1 if count else 0


def agreement_bound(per_sample: np.ndarray, groups: np.ndarray | None,
                    confidence: float = CONFIDENCE) -> Bound:
    """Clopper-Pearson over units; a unit succeeds when every one of its samples scores 1."""
    index, units = unit_index(len(per_sample), groups)
    missed = np.zeros(units, dtype=bool)
    np.logical_or.at(missed, index, np.asarray(per_sample) < 1.0)
    successes = int(units - missed.sum())
    return Bound(clopper_pearson_lower(successes, units, confidence), confidence, units, "clopper-pearson", successes)


def _bootstrap_lower(statistic, units: int, confidence: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, units, size=(BOOTSTRAP, units))
    return float(np.percentile(statistic(draws), (1.0 - confidence) * 100))


def mean_bound(per_sample: np.ndarray, groups: np.ndarray | None, confidence: float = CONFIDENCE,
               seed: int = 0) -> Bound:
    """Percentile bootstrap of the mean over units of the per-unit mean score."""
    index, units = unit_index(len(per_sample), groups)
    if units < MIN_BOOTSTRAP_UNITS:
        return Bound(0.0, confidence, units, "bootstrap")
    per_unit = np.bincount(index, weights=per_sample, minlength=units) / np.bincount(index, minlength=units)
    lower = _bootstrap_lower(lambda draws: per_unit[draws].mean(axis=1), units, confidence, seed)
    return Bound(min(lower, float(per_unit.mean())), confidence, units, "bootstrap")


def rel_l2_bound(errors2: np.ndarray, norms2: np.ndarray, groups: np.ndarray | None,
                 confidence: float = CONFIDENCE, seed: int = 0) -> Bound:
    """1 - rel-L2 of the worst output, bootstrapped over units. ``errors2`` / ``norms2``: [outputs, samples]
    squared error and squared reference norm per sample."""
    index, units = unit_index(errors2.shape[1], groups)
    if units < MIN_BOOTSTRAP_UNITS:
        return Bound(0.0, confidence, units, "bootstrap")
    e = np.stack([np.bincount(index, weights=row, minlength=units) for row in errors2])
    n = np.stack([np.bincount(index, weights=row, minlength=units) for row in norms2])

    def score(draws: np.ndarray) -> np.ndarray:
        num, den = e[:, draws].sum(axis=2), n[:, draws].sum(axis=2)  # [outputs, resamples]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(den > 0, np.sqrt(num) / np.sqrt(den), np.where(num > 0, np.inf, 0.0))
        return 1.0 - ratio.max(axis=0)

    point = float(score(np.arange(units)[None])[0])
    return Bound(min(_bootstrap_lower(score, units, confidence, seed), point), confidence, units, "bootstrap")


def unprovable_line(label: str, min_fidelity: float, units: int, method: str, basis: str,
                    confidence: float = CONFIDENCE) -> str | None:
    """One line when ``units`` independent units cannot prove ``min_fidelity`` even with no miss (else None)."""
    best = best_provable(units, method, confidence)
    if best >= min_fidelity:
        return None
    if min_fidelity >= 1.0:
        return (f"{label} >= 100% is proved by exact rewrites only (no finite sample proves a perfect score); "
                f"only exact rewrites are taken")
    need = units_needed(min_fidelity, method, confidence)
    if method == "bootstrap":
        why = f"a bootstrap bound needs at least {need} independent units"
    else:
        why = (f"with no miss at all their {confidence:.0%} lower bound is {best:.1%}; {min_fidelity:.0%} needs "
               f"{need} independent samples with no miss")
    return (f"{units} independent held-out unit(s) ({basis}) cannot prove {label} >= {min_fidelity:.2%}: {why}; "
            f"only exact rewrites are taken (give more held-out data: --calibration, --holdout)")
