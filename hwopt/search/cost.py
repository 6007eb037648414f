"""Cost models for the search: latency per kernel, by name.

- ``estimator``: the target's trained estimator (``hwopt.estimator``), no
  hardware or emulator needed at search time.
- ``backend``: the target's measurement backend itself (npu32: the SCALE-Sim
  emulator, per-layer disk cache; cpu: onnxruntime timings). Exact for the
  emulator but slow on a cold cache: every distinct kernel of the space is
  simulated once.
- ``auto``: the estimator when the target has a trained one, else the backend
  (reports say which was used).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from hwopt.errors import HwoptError
from hwopt.analysis.kernel import Kernel


class BackendCost:
    """Latency from the target's measurement backend, memoised per kernel."""

    def __init__(self, target, progress: Callable[[int, int], None] | None = None) -> None:
        from hwopt.backends import get_backend

        self.backend = get_backend(target)
        label = {"scalesim": "SCALE-Sim emulator", "onnxruntime": "onnxruntime measurements"}
        self.name = f"backend ({label.get(target.backend, target.backend)})"
        self.progress = progress
        self._memo: dict[Kernel, float] = {}

    def scores_kind(self, kind: str) -> bool:
        return True  # the backend measures whatever it is given

    def predict(self, kernels: Sequence[Kernel]) -> np.ndarray:
        missing = [k for k in dict.fromkeys(kernels) if k not in self._memo]
        if missing:
            for m in self.backend.measure(missing, self.progress):
                self._memo[m.kernel] = float(m.latency_us)
        return np.array([self._memo[k] for k in kernels], dtype=np.float64)


class EstimatorCost:
    """Latency from the target's trained per-kernel estimator."""

    def __init__(self, target, allow_fallback: bool = False, folder=None) -> None:
        from hwopt.estimator import load_estimator  # type: ignore[import-not-found]

        self.estimator = load_estimator(target, folder, allow_fallback=allow_fallback)
        self.name = f"estimator ({target.name})"

    def scores_kind(self, kind: str) -> bool:
        return self.estimator.scores_kind(kind)

    def predict(self, kernels: Sequence[Kernel]) -> np.ndarray:
        return np.asarray(self.estimator.predict(list(kernels)), dtype=np.float64)


def _estimator(target, progress, allow_fallback=False):
    return EstimatorCost(target, allow_fallback)


def _backend(target, progress, allow_fallback=False):
    return BackendCost(target, progress)


def _auto(target, progress, allow_fallback=False):
    try:
        return EstimatorCost(target, allow_fallback)
    except (ImportError, HwoptError, FileNotFoundError):
        from hwopt.backends import WHOLE_MODEL_JUDGES

        if target.backend in WHOLE_MODEL_JUDGES:
            raise HwoptError(f"target {target.name!r} has no trained estimator yet, and its judge ({target.backend}) "
                             "schedules whole models: a sum of single-kernel compiles is no cost model (--cost "
                             "backend forces it)") from None
        return BackendCost(target, progress)


COST_MODELS: dict[str, Callable] = {"auto": _auto, "estimator": _estimator, "backend": _backend}


def make_cost_model(kind: str, target, progress: Callable[[int, int], None] | None = None,
                    allow_fallback: bool = False):
    """``allow_fallback``: an estimator scores kernels it was never trained on by a roofline (flagged)."""
    if kind not in COST_MODELS:
        raise HwoptError(f"unknown cost model {kind!r} (known: {', '.join(COST_MODELS)})")
    try:
        return COST_MODELS[kind](target, progress, allow_fallback)
    except ImportError:
        raise HwoptError(f"no trained estimator for target {target.name!r} in this install: "
                         f"use --cost backend") from None
