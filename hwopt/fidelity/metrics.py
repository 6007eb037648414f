"""Task fidelity: how well a rewritten model still does the original's job, in the user's terms.

A registry of metrics, each a score in [0, 1] (higher is better) of a candidate's
outputs against the original's on the same held-out samples:

- ``top1``: the share of samples whose argmax over the class axis (the last) is the original's.
- ``top5``: the share whose original top-1 class is among the candidate's five best.
- ``argmax``: per-pixel argmax agreement over the class axis of dense maps [N, C, H, W].
- ``cosine``: mean per-sample cosine similarity of the flattened outputs.
- ``rel-l2``: 1 - relative L2 error over all samples (so ``--min-fidelity 0.95`` = rel-L2 <= 0.05).

``auto`` picks from the output shapes: one output [N, C] with C >= 2 (a classifier,
whatever its class count: the answer it picks is the task) -> top1; one output
[N, C, H, W] with C >= 2 and H x W > 1 (a class map) -> argmax; anything else
(regression heads, detection boxes and scores, several outputs, one score) -> cosine.
``metric_reason`` says which rule chose it, for the report.
A model with several outputs scores its worst output: a detector whose boxes drift
is broken however good its scores are. rel-L2 (worst output) is always reported too.

A candidate output with a non-finite value scores NaN, and NaN fails every budget.
Every figure comes with its one-sided lower confidence bound over independent held-out
units (``hwopt.fidelity.bounds``): an inexact variant is admitted on the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from hwopt.errors import HwoptError
from hwopt.fidelity.bounds import CONFIDENCE, Bound, agreement_bound, mean_bound, rel_l2_bound

_MIN_CLASSES = 2  # a classifier is judged by its answer whatever its class count (2-class PP-OCR direction)
_TOP5_CLASSES = 6  # top-5 containment says something only with more than 5 classes


def _finite(cand: np.ndarray) -> bool:
    return bool(np.isfinite(cand).all())


def _top1(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    return (ref.argmax(axis=-1) == cand.argmax(axis=-1)).reshape(len(ref), -1).mean(axis=1)


def _top5(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    k = min(5, cand.shape[-1])
    best = ref.argmax(axis=-1)[..., None]
    top = np.argpartition(-cand, k - 1, axis=-1)[..., :k]
    return (top == best).any(axis=-1).reshape(len(ref), -1).mean(axis=1)


def _argmax(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    return (ref.argmax(axis=1) == cand.argmax(axis=1)).reshape(len(ref), -1).mean(axis=1)


def _cosine(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Per-sample cosine, scale-aware: a sample whose outputs differ by no more than fp32 noise at the
    output's scale over the whole set (``hwopt.fidelity.verify``'s tolerance, ATOL + RTOL x max |ref|)
    counts as 1. Without that, a near-empty sample (a text detector's map of a photo without text: values
    ~1e-9) turns float rounding into a cosine of 0, and an exact rewrite scored 95.7%."""
    from hwopt.fidelity.verify import ATOL, RTOL

    a = ref.reshape(len(ref), -1).astype(np.float64)
    b = cand.reshape(len(cand), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = (a * b).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where((na > 0) & (nb > 0), dot / (na * nb), np.where(na == nb, 1.0, 0.0))
    if a.size and np.isfinite(a).all() and np.isfinite(b).all():
        noise = np.abs(a - b).max(axis=1) <= ATOL + RTOL * float(np.abs(a).max())
        cos = np.where(noise, 1.0, cos)
    return np.clip(cos, -1.0, 1.0)


def rel_l2(ref: np.ndarray, cand: np.ndarray) -> float:
    """||cand - ref|| / ||ref|| over all samples (inf when the reference is zero and the candidate not)."""
    r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    if not np.isfinite(c).all():
        return math.nan
    num, den = float(np.linalg.norm(c - r)), float(np.linalg.norm(r))
    return num / den if den else (0.0 if num == 0 else math.inf)


def _is_classes(shape: Sequence[int]) -> bool:
    return len(shape) == 2 and shape[-1] >= _MIN_CLASSES


def _is_top5_classes(shape: Sequence[int]) -> bool:
    return len(shape) == 2 and shape[-1] >= _TOP5_CLASSES


def _is_class_map(shape: Sequence[int]) -> bool:
    return len(shape) == 4 and shape[1] >= 2 and shape[2] * shape[3] > 1


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # what the figure is called in reports
    default_min: float  # the default budget (--min-fidelity)
    per_sample: Callable[[np.ndarray, np.ndarray], np.ndarray] | None  # None: not a per-sample mean
    applies: Callable[[Sequence[int]], bool]  # whether an output of this shape (samples first) can be scored
    needs: str  # what applies() wants, for the error message
    agreement: bool = False  # per sample a success or a miss (Clopper-Pearson bound), else a continuous score

    def score(self, ref: np.ndarray, cand: np.ndarray) -> float:
        if not _finite(cand):
            return math.nan
        if self.per_sample is None:  # rel-l2
            return 1.0 - rel_l2(ref, cand)
        return float(self.per_sample(ref, cand).mean())


# The defaults are one budget in different units: 99% of the decisions a user sees kept for
# classifiers and class maps; for raw outputs a cosine of 0.999 (rel-L2 about 0.045) or rel-L2 0.05.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("top1", "top-1 agreement", 0.99, _top1, _is_classes, "an output [N, C] with C >= 2", agreement=True),
    Metric("top5", "top-5 containment", 0.99, _top5, _is_top5_classes, "an output [N, C] with C >= 6",
           agreement=True),
    Metric("argmax", "per-pixel argmax agreement", 0.99, _argmax, _is_class_map, "an output [N, C, H, W]"),
    Metric("cosine", "cosine similarity", 0.999, _cosine, lambda s: True, "any output"),
    Metric("rel-l2", "1 - rel. L2 error", 0.95, None, lambda s: True, "any output"),
)}


def _dims(dims: list) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def metric_reason(shapes: dict[str, Sequence[int]], requested: str = "auto") -> str:
    """Why ``choose_metric`` picks what it picks, in one clause for the report."""
    if requested != "auto":
        return f"--fidelity {requested} (asked for)"
    only = [["N", *list(s)[1:]] if len(s) else [] for s in shapes.values()]
    if len(only) == 1 and _is_classes(list(shapes.values())[0]):
        return (f"auto: one output {_dims(only[0])} of class scores: a classifier is judged by the class it picks "
                f"(top-1 agreement, any class count >= 2)")
    if len(only) == 1 and _is_class_map(list(shapes.values())[0]):
        return f"auto: one output {_dims(only[0])}, a dense class map: per-pixel argmax agreement"
    what = "several outputs (the worst counts)" if len(only) > 1 else f"one output {_dims(only[0]) if only else '[]'}"
    return f"auto: {what}, not class scores [N, C>=2] or a class map [N, C>=2, H, W]: cosine similarity"


def choose_metric(shapes: dict[str, Sequence[int]], requested: str = "auto") -> Metric:
    """The metric for a model with these output shapes (samples first): ``requested`` or auto's pick."""
    if requested == "auto":
        only = list(shapes.values())
        if len(only) == 1 and _is_classes(only[0]):
            return METRICS["top1"]
        if len(only) == 1 and _is_class_map(only[0]):
            return METRICS["argmax"]
        return METRICS["cosine"]
    if requested not in METRICS:
        raise HwoptError(f"unknown fidelity metric {requested!r} (metrics: auto, {', '.join(METRICS)})")
    metric = METRICS[requested]
    bad = [n for n, s in shapes.items() if not metric.applies(s)]
    if bad:
        raise HwoptError(f"--fidelity {requested} needs {metric.needs}; output {bad[0]!r} has shape "
                         f"{list(shapes[bad[0]])}")
    return metric


@dataclass
class Fidelity:
    """One model's task fidelity and rel-L2 against the original on the held-out samples."""

    metric: str
    value: float  # the worst output's score (NaN: non-finite outputs)
    rel_l2: float  # the worst output's relative L2 error
    samples: int
    outputs: dict[str, float] = field(default_factory=dict)  # score per output
    bound: Bound | None = None  # the lower confidence bound over independent held-out units

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value) and math.isfinite(self.rel_l2)

    @property
    def lower(self) -> float | None:
        return self.bound.lower if self.bound is not None else None

    def to_dict(self) -> dict:
        return {"metric": self.metric, "value": _json(self.value), "rel_l2": _json(self.rel_l2),
                "samples": self.samples, "outputs": {k: _json(v) for k, v in self.outputs.items()},
                **(self.bound.to_dict() if self.bound is not None else {})}


def _json(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None  # JSON has no NaN


def measure(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], metric: Metric,
            groups: np.ndarray | None = None, confidence: float = CONFIDENCE) -> Fidelity:
    """Score every reference output; the worst is the model's figure (NaN if any is NaN), with its lower
    confidence bound over independent units (``groups``: the source of each sample; None: each sample)."""
    scores = {n: metric.score(reference[n], candidate[n]) for n in reference}
    errors = [rel_l2(reference[n], candidate[n]) for n in reference]
    value = math.nan if any(math.isnan(s) for s in scores.values()) else min(scores.values(), default=1.0)
    worst = math.nan if any(math.isnan(e) for e in errors) else max(errors, default=0.0)
    samples = len(next(iter(reference.values()))) if reference else 0
    bound = _bound(reference, candidate, metric, groups, confidence) if samples and math.isfinite(value) else None
    return Fidelity(metric.name, value, worst, samples, scores, bound)


def _bound(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], metric: Metric,
           groups: np.ndarray | None, confidence: float) -> Bound:
    if metric.per_sample is None:  # rel-l2: squared error and norm per output and sample
        flat = lambda a: a.reshape(len(a), -1).astype(np.float64)  # noqa: E731
        errors2 = np.stack([((flat(candidate[n]) - flat(reference[n])) ** 2).sum(axis=1) for n in reference])
        norms2 = np.stack([(flat(reference[n]) ** 2).sum(axis=1) for n in reference])
        return rel_l2_bound(errors2, norms2, groups, confidence)
    worst = np.min([metric.per_sample(reference[n], candidate[n]) for n in reference], axis=0)
    return (agreement_bound if metric.agreement else mean_bound)(worst, groups, confidence)


@dataclass(frozen=True)
class FidelityBudget:
    """What a written model must keep: task fidelity >= min_fidelity and rel-L2 <= max_deviation.

    ``None`` disables a bound (``--for-retraining`` disables both unless --max-deviation is given).
    """

    metric: Metric
    min_fidelity: float | None
    max_deviation: float | None = None

    def misses(self, fid: Fidelity, exact: bool = False) -> str | None:
        """Why ``fid`` fails the budget, or None when it passes. NaN / inf always fail. An inexact model
        must meet --min-fidelity with its lower confidence bound (when it has one); an exact one (every step
        verified function-preserving within fp32 tolerance) is within it by construction: its figure is fp32
        noise, which a per-sample metric can magnify on degenerate samples (PP-OCRv4's detector, canonical
        form alone: rel-L2 1.6e-5 but mean cosine 0.9989 on random inputs, an almost empty map among them)."""
        if not fid.finite:
            return "non-finite outputs (NaN or inf) on the held-out samples"
        if exact:
            return None
        if self.min_fidelity is not None and not fid.value >= self.min_fidelity:
            return f"{self.metric.label} {fid.value:.2%} < --min-fidelity {self.min_fidelity:.2%}"
        bound = fid.bound
        if self.min_fidelity is not None and not exact and bound is not None and not bound.lower >= self.min_fidelity:
            return (f"{self.metric.label} {fid.value:.2%}, but its {bound.confidence:.0%} lower bound "
                    f"{bound.lower:.2%} (over {bound.units} independent held-out units) < --min-fidelity "
                    f"{self.min_fidelity:.2%}")
        if self.max_deviation is not None and not fid.rel_l2 <= self.max_deviation:
            return f"rel-L2 {fid.rel_l2:.4g} > --max-deviation {self.max_deviation:.4g}"
        return None

    def to_dict(self) -> dict:
        return {"metric": self.metric.name, "label": self.metric.label, "min_fidelity": self.min_fidelity,
                "max_deviation": self.max_deviation}
