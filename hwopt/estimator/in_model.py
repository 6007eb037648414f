"""What a whole model costs beyond the sum of its kernels, learned from models measured end to end.

Kernels are measured one per isolated session (net of that session's own
boundary). Inside a real model a runtime also pays per-node dispatch and
layout conversions between kernels that do not share a layout (onnxruntime's
NCHWc reorders around pooling, Resize, Concat, squeeze-excite...), and runs
kernels back to back with warm or cold caches. On the cpu target that makes a
model's end-to-end time 1.07-1.25x its kernel sum, a gap no per-kernel
regressor can learn. The term here is fitted on whole models of the training
families measured end to end (the ground truth), against the estimator's own
predicted kernel sums, so it also absorbs the kernel models' common bias:

    latency = scale * sum(kernels) + reorder_us * conversions + reorder_ns_per_byte * bytes converted
              [+ per_kernel_us * (number of non-free kernels), off by default: see fit_in_model_term]

When the models measured end to end span small and large kernels (``fit_signed_term``: real exports are
often width-0.25 backbones at 64x64 whose ~80 nodes run in ~80 us, where a node inside a model costs about
a microsecond less than the same kernel timed in its own session), the per-kernel cost is fitted with its
sign, jointly with the scale and the cost per conversion, and each kernel's in-model time is kept above
``floor_share`` of its scaled isolated time:

    kernel inside the model = max(scale * kernel + per_kernel_us, floor_share * scale * kernel)

The layout conversions (onnxruntime's NCHWc reorders, where the target file
names a blocked layout) are predicted from the schedule (``hwopt.analysis.layout``);
their two costs are fitted first, on the conversion times the backend
measured inside the same models with onnxruntime's profiler (column
``reorder_nodes`` of the end-to-end table: every single conversion), not on the
models' residuals: only a few training models convert much, and a residual fit
would make the conversions absorb every other in-model error of those few.
The scale is then fitted on what remains, by least squares on relative
error (every model weighs alike whatever its size). Every coefficient is kept
non-negative. A backend whose model latency is by definition the kernel sum
(npu32: kernels emulated and summed) has no term.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np

from hwopt.errors import HwoptError
from hwopt.analysis.kernel import Kernel
from hwopt.analysis.layout import reorder_bytes

MIN_MODELS = 3  # two coefficients: fewer models would fit them exactly, noise included


@dataclass(frozen=True)
class InModelTerm:
    scale: float
    per_kernel_us: float
    models: int  # how many end-to-end measured models it was fitted on
    median_abs_error_pct: float  # on those models, after the term (in-sample)
    reorder_us: float = 0.0  # per layout conversion
    reorder_ns_per_byte: float = 0.0  # per byte converted
    floor_share: float = 0.0  # a kernel's in-model time stays above this share of its scaled isolated time

    def kernels_us(self, isolated_us: np.ndarray) -> np.ndarray:
        """Each (paid) kernel's time inside a model, from its isolated estimate (conversions apart)."""
        scaled = self.scale * np.asarray(isolated_us, dtype=float)
        return np.maximum(scaled + self.per_kernel_us, self.floor_share * scaled)

    def conversion_us(self, kernel: Kernel) -> float:
        """The layout conversions a kernel carries inside its model (0 where it carries none)."""
        count, size = reorder_bytes(kernel)
        return self.reorder_us * count + self.reorder_ns_per_byte * size * 1e-3 if count else 0.0

    def apply(self, kernel_sum_us: float, kernels: int, conversions_us: float = 0.0) -> float:
        return self.scale * kernel_sum_us + self.per_kernel_us * kernels + conversions_us

    def to_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "InModelTerm":
        try:
            return cls(float(data["scale"]), float(data["per_kernel_us"]), int(data["models"]),
                       float(data["median_abs_error_pct"]), float(data.get("reorder_us", 0.0)),
                       float(data.get("reorder_ns_per_byte", 0.0)), float(data.get("floor_share", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise HwoptError(f"bad in-model term in the estimator index ({exc})") from None


def fit_conversion_cost(counts: Sequence[int], sizes: Sequence[int], measured_us: Sequence[float]) -> tuple[float, float]:
    """(us per conversion, ns per byte) from conversions and their profiled time (non-negative LS).

    Rows are single conversions (count 1: onnxruntime's profiler times each node) where the end-to-end
    table has them, else models' totals. Single conversions identify the two costs: a handful of models'
    totals did not (the per-conversion cost came out anywhere from 0.5 to 4.9 us across sittings).
    """
    from scipy.optimize import nnls

    rows = [(c, b, t) for c, b, t in zip(counts, sizes, measured_us) if c > 0 and t == t]
    if len(rows) < 2:
        return 0.0, 0.0
    data = np.array(rows, dtype=float)
    # Absolute, not relative, error: what matters is the microseconds a model's conversions add. A
    # relative fit let the many models with one tiny conversion (4 us) set the per-conversion cost and
    # under-priced large tensors by 3x (segmentation 105 vs 325 us measured, EfficientNet-B0 0.6 vs 1.2 ms).
    design = np.stack([data[:, 0], data[:, 1] * 1e-3], axis=1)
    (per_conversion, per_byte), _ = nnls(design, data[:, 2])
    return float(per_conversion), float(per_byte)


def fit_in_model_term(kernel_sums_us: Sequence[float], kernel_counts: Sequence[int],
                      measured_us: Sequence[float], conversions_us: Sequence[float] | None = None,
                      conversion_cost: tuple[float, float] = (0.0, 0.0), per_kernel: bool = False) -> InModelTerm:
    """Fit the term on models with their predicted kernel sums, kernel counts and end-to-end latencies.

    ``conversions_us``: each model's predicted layout conversions at ``conversion_cost`` (already fitted).
    ``per_kernel``: also fit a cost per kernel. Off by default: models of a few families have nearly
    proportional kernel counts and sums, so the two coefficients trade off freely; fitted on the training
    families it came out at 8 us per kernel once and made MobileNetV3-Small (80 small kernels) 20-45% slow.
    """
    sums = np.asarray(kernel_sums_us, dtype=float)
    counts = np.asarray(kernel_counts, dtype=float)
    converted = np.zeros_like(sums) if conversions_us is None else np.asarray(conversions_us, dtype=float)
    truth = np.asarray(measured_us, dtype=float) - converted  # what the kernels themselves account for
    if len(truth) < MIN_MODELS:
        raise HwoptError(f"{len(truth)} end-to-end measured models; at least {MIN_MODELS} are needed for the "
                         f"in-model term")
    if not (np.all(truth > 0) and np.all(sums > 0)):
        raise HwoptError("end-to-end latencies and kernel sums must be positive")
    # Relative least squares: divide each row by the measured latency.
    design = np.stack([sums / truth, counts / truth], axis=1)
    target = np.ones_like(truth)
    coef = np.linalg.lstsq(design, target, rcond=None)[0] if per_kernel else np.zeros(2)
    if not per_kernel or coef[1] < 0 or coef[0] < 0:  # the scale alone (asked, or the fit's boundary)
        scale_only = float((design[:, 0] @ target) / (design[:, 0] @ design[:, 0]))
        coef = np.array([scale_only, 0.0])
    fitted = (design @ coef * truth + converted) / (truth + converted)
    return InModelTerm(float(coef[0]), float(coef[1]), int(len(truth)),
                       float(np.median(np.abs(fitted - 1.0)) * 100), *conversion_cost)


FLOOR_SHARE = 0.25  # a kernel inside a model costs at least a quarter of its scaled isolated time
SIGNED_SPAN = 5.0  # mean kernel time spanning this factor across the models: the per-kernel cost is identifiable
SIGNED_MIN_MODELS = 8  # three coefficients: on fewer models they fit the noise (3 models: -4.3 us per kernel)


def spans_sizes(kernel_lists: Sequence[np.ndarray]) -> bool:
    """Whether there are enough models and their mean kernel times span ``SIGNED_SPAN`` (small and large
    kernels both present)."""
    means = [float(np.mean(k)) for k in kernel_lists if len(k)]
    return len(means) >= SIGNED_MIN_MODELS and max(means) >= SIGNED_SPAN * min(means)


def fit_signed_term(kernel_lists: Sequence[np.ndarray], measured_us: Sequence[float],
                    conversions: Sequence[int], conversion_bytes: Sequence[int], per_byte_ns: float,
                    floor_share: float = FLOOR_SHARE, iterations: int = 8) -> InModelTerm:
    """Scale, a signed per-kernel cost and the cost per conversion, fitted jointly on whole models.

    ``kernel_lists``: each model's isolated kernel estimates (paid kernels); ``conversions`` and
    ``conversion_bytes``: its predicted layout conversions; ``per_byte_ns``: their per-byte cost (fitted
    on the profiled conversions: large tensors time well there). The per-conversion cost is fitted here,
    not from the profiler: onnxruntime's profiler records whole microseconds and adds its own cost to
    every node, so a conversion of a few kilobytes reads 2 us inside a model whose nodes take ~1 us
    each. Relative least squares (every model weighs alike), scale and conversion cost non-negative;
    kernels the floor holds are refitted at it until the set settles.
    """
    from scipy.optimize import lsq_linear

    measured = np.asarray(measured_us, dtype=float)
    if len(measured) < MIN_MODELS:
        raise HwoptError(f"{len(measured)} end-to-end measured models; at least {MIN_MODELS} are needed")
    byte_us = np.asarray(conversion_bytes, dtype=float) * per_byte_ns * 1e-3
    counts = np.asarray(conversions, dtype=float)
    lists = [np.asarray(k, dtype=float) for k in kernel_lists]
    scale, per_kernel, per_conversion = 1.0, 0.0, 0.0
    for _ in range(iterations):
        held = [scale * k + per_kernel < floor_share * scale * k for k in lists]  # kernels at the floor
        free_sum = np.array([k[~h].sum() + floor_share * k[h].sum() for k, h in zip(lists, held)])
        free_count = np.array([float((~h).sum()) for h in held])
        design = np.stack([free_sum, free_count, counts], axis=1) / measured[:, None]
        target = (measured - byte_us) / measured
        fit = lsq_linear(design, target, bounds=([0.0, -np.inf, 0.0], [np.inf, np.inf, np.inf]))
        scale, per_kernel, per_conversion = (float(v) for v in fit.x)
    term = InModelTerm(scale, per_kernel, len(measured), 0.0, per_conversion, per_byte_ns, floor_share)
    fitted = np.array([term.kernels_us(k).sum() for k in lists]) + per_conversion * counts + byte_us
    return replace(term, median_abs_error_pct=float(np.median(np.abs(fitted / measured - 1.0)) * 100))
