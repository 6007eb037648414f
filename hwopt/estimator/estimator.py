"""The batch API the search codes against: ``load_estimator(target)`` -> ``Estimator``.

- ``Estimator.predict(kernels)``: latency (us) per kernel, cached by ``Kernel``
  (it is hashable and equal kernels cost the same), cache misses scored in one
  vectorised batch; where the estimator has an in-model term (``in_model``:
  what a kernel costs inside a model beyond its isolated measurement, learned
  from models measured end to end) it is part of every non-free kernel's
  figure, so the search, ``estimate`` and the per-kernel table agree;
- ``Estimator.predict_dram(kernels)``: off-chip bytes per kernel, or None when
  the target's backend does not measure them (cpu);
- ``Estimator.estimate(schedule_or_model)``: a ``ModelEstimate``: latency = the
  sum over the target's schedule (views the target declares free cost 0 and
  are listed as free) plus, on a target with a memory budget, the DRAM
  charge of what does not fit on chip (``onchip``,
  ``hwopt.estimator.memory.POLICY``), exact parameter and peak activation
  bytes in the target's layout, accumulated off-chip traffic.

- ``Estimator.interval(kernels)``: an 80% band per kernel (the regressor's
  out-of-fold residual quantiles, widened by its extrapolation error where the
  kernel lies outside the training table's range: flagged ``ood``); a model's
  band is the sum of its kernels' lows and highs (one estimator's errors on one
  model move together), and the kernels with the widest bands are named as
  what drives it.

A kernel whose kind the estimator never saw in training (or an ``unknown``
op) is never counted as zero: it raises ``HwoptError`` naming the op, unless
``allow_fallback`` is set, in which case a roofline estimate is used and the
kernel is listed in ``ModelEstimate.fallbacks`` (and flagged per kernel).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from hwopt.errors import HwoptError
from hwopt.estimator.fallback import Roofline
from hwopt.estimator.features import features
from hwopt.estimator.in_model import InModelTerm
from hwopt.estimator.memory import OnChip, basis, on_chip, param_bytes, peak_activation_bytes
from hwopt.estimator.regressor import KernelRegressor
from hwopt.analysis.kernels import schedule
from hwopt.analysis.kernel import Kernel, Schedule
from hwopt.targets import DEFAULT_TARGET, Target, load_target

INDEX = "estimator.json"
INTERVAL_LEVEL = 0.8  # the per-kernel band: 10th to 90th percentile of out-of-fold residuals
# How the size features a kernel can lie outside the table's range are named to a user.
OUTSIDE_NAMES = {"log_prior": "cycles", "log_macs": "MACs", "log_in_bytes": "input size",
                 "log_out_bytes": "output size",
                 "log_param_bytes": "weights", "out_h": "height", "out_w": "width", "kernel": "window",
                 "stride": "stride"}
FALLBACK_BAND = 3.0  # a roofline estimate's band: a factor of 3 either way (it has no held-out figure)


@dataclass
class KernelEstimate:
    description: str
    kind: str
    latency_us: float
    dram_bytes: float | None
    nodes: list[str]
    free: bool = False  # declared free by the target (views): 0 by definition, not by prediction
    fallback: bool = False  # roofline estimate, not the learned model
    low_us: float | None = None  # the 80% band (None: an estimator trained without intervals)
    high_us: float | None = None
    ood: bool = False  # features outside the training table's range (band widened)
    outside: list[str] = field(default_factory=list)  # which size features lie outside it


@dataclass
class ModelEstimate:
    latency_us: float
    per_kernel: list[KernelEstimate]
    param_bytes: int
    peak_activation_bytes: int
    dram_bytes: float | None
    fallbacks: list[str] = field(default_factory=list)
    target: str = ""
    in_model_us: float = 0.0  # the part of latency_us that is the in-model term (0 without one)
    memory_basis: str = ""  # how param_bytes and peak_activation_bytes are counted
    low_us: float | None = None  # the model's 80% band (None: the estimator has no intervals)
    high_us: float | None = None
    # Where the memory lives on a target with a budget, and the off-chip charge that latency_us includes
    # (hwopt.estimator.memory.POLICY); None: the target has no budget.
    onchip: OnChip | None = None

    @property
    def memory_charge_us(self) -> float:
        return self.onchip.charge_us if self.onchip is not None else 0.0

    @property
    def ood_kernels(self) -> list[KernelEstimate]:
        return [k for k in self.per_kernel if k.ood]

    def drivers(self, count: int = 3) -> list[KernelEstimate]:
        """The kernels whose bands are widest: what the model's band mostly comes from."""
        banded = [k for k in self.per_kernel if k.low_us is not None and k.high_us is not None and not k.free]
        return sorted(banded, key=lambda k: -(k.high_us - k.low_us))[:count]

    def interval_dict(self) -> dict | None:
        """The band, the out-of-distribution kernels and the drivers, as the JSON outputs carry them."""
        if self.low_us is None:
            return None
        width = max(self.high_us - self.low_us, 1e-12)
        return {"level": INTERVAL_LEVEL, "low_us": self.low_us, "high_us": self.high_us,
                "ood_kernels": len(self.ood_kernels),
                "drivers": [{"kernel": k.description, "nodes": k.nodes[:3], "low_us": k.low_us, "high_us": k.high_us,
                             "share_of_band": (k.high_us - k.low_us) / width, "ood": k.ood, "outside": k.outside}
                            for k in self.drivers()]}

    def to_dict(self) -> dict:
        return {"target": self.target, "latency_us": self.latency_us, "in_model_us": self.in_model_us,
                "latency_low_us": self.low_us, "latency_high_us": self.high_us, "interval": self.interval_dict(),
                "param_bytes": self.param_bytes,
                "peak_activation_bytes": self.peak_activation_bytes, "memory_basis": self.memory_basis,
                "dram_bytes": self.dram_bytes, "memory_charge_us": self.memory_charge_us,
                "onchip": None if self.onchip is None else self.onchip.to_dict(),
                "fallbacks": self.fallbacks, "kernels": [vars(k) for k in self.per_kernel]}


class Estimator:
    """A trained estimator for one target (see the module docstring)."""

    def __init__(self, target: Target, latency: KernelRegressor, dram: KernelRegressor | None, roofline: Roofline,
                 allow_fallback: bool = False, folder: Path | None = None,
                 in_model: InModelTerm | None = None, ops: frozenset[str] | None = None) -> None:
        self.target = target
        # "kind:op" of every training row (None: an index written before they were kept): a kernel of an op the
        # table never measured (a ConvTranspose scored as the conv it resembles) is out of distribution.
        self.ops = ops
        self.in_model = in_model
        self.latency = latency
        self.dram = dram
        self.roofline = roofline
        self.allow_fallback = allow_fallback
        self.folder = folder
        self.p = target.parallelism
        self.dtype_bytes = target.dtype_bytes
        self.vector_depthwise = target.depthwise == "vector"  # the hardware class's prior for depthwise convs
        self.free_kinds = frozenset(("view",) if target.fusion.view_ops_free else ())
        self._known = frozenset(latency.kinds)
        self._latency_cache: dict[Kernel, float] = {}
        self._dram_cache: dict[Kernel, float] = {}

    # -- per kernel ------------------------------------------------------------------------------
    def _covers(self, kind: str) -> bool:
        return kind in self.free_kinds or (kind in self._known and kind != "unknown")

    def scorable(self, kernel: Kernel) -> bool:
        """Whether the learned model covers this kernel (free kinds count as covered)."""
        return self._covers(kernel.kind)

    def scores_kind(self, kind: str) -> bool:
        """Whether kernels of this kind get a learned estimate (or the flagged roofline, when allowed)."""
        return self.allow_fallback or self._covers(kind)

    def _check(self, kernels: Sequence[Kernel], allow_fallback: bool) -> None:
        if allow_fallback:
            return
        for k in kernels:
            if not self.scorable(k):
                what = f"op {k.op!r}" if k.op else f"kind {k.kind!r}"
                raise HwoptError(f"the {self.target.name} estimator cannot score {what} ({k.describe()}): it was "
                                 f"never measured on this target; measure it (hwopt profile --from MODEL) or "
                                 f"allow the roofline fallback (--allow-fallback)")

    def _predict(self, kernels: Sequence[Kernel], model: KernelRegressor, cache: dict[Kernel, float],
                 fallback_fn, allow_fallback: bool | None) -> np.ndarray:
        allow = self.allow_fallback if allow_fallback is None else allow_fallback
        self._check(kernels, allow)
        misses = [k for k in dict.fromkeys(kernels) if k not in cache]
        if misses:
            free = [k for k in misses if k.kind in self.free_kinds]
            learned = [k for k in misses if k.kind not in self.free_kinds and k.kind in model.kinds
                       and k.kind != "unknown"]
            learned_set = set(learned)
            other = [k for k in misses if k.kind not in self.free_kinds and k not in learned_set]
            cache.update(dict.fromkeys(free, 0.0))
            if learned:
                x = features(learned, self.p, self.dtype_bytes, self.vector_depthwise)
                cache.update(zip(learned, model.predict(x, [k.kind for k in learned]).tolist()))
            if other:
                cache.update(zip(other, fallback_fn(other).tolist()))
        return np.fromiter((cache[k] for k in kernels), dtype=np.float64, count=len(kernels))

    def predict(self, kernels: Sequence[Kernel], allow_fallback: bool | None = None,
                isolated: bool = False) -> np.ndarray:
        """Latency (us) of each kernel inside a model; raises HwoptError on a kernel it cannot score unless
        fallback is allowed. ``isolated``: without the in-model term (what the kernel table measured)."""
        latency = self._predict(kernels, self.latency, self._latency_cache,
                                lambda ks: self.roofline.predict(ks, self.dtype_bytes), allow_fallback)
        if self.in_model is None or isolated:
            return latency
        paid = np.fromiter((k.kind not in self.free_kinds for k in kernels), dtype=bool, count=len(kernels))
        # Layout conversions (hwopt.analysis.layout) are paid even around a free view (a Flatten after a blocked pool).
        conversions = np.fromiter((self.in_model.conversion_us(k) for k in kernels), dtype=np.float64,
                                  count=len(kernels))
        return np.where(paid, self.in_model.kernels_us(latency), 0.0) + conversions

    def interval(self, kernels: Sequence[Kernel], allow_fallback: bool | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Per kernel: the band's low and high latency (us, in-model term included) and the out-of-distribution
        flag; None when the estimator was trained without intervals."""
        if not any(g.ranges for g in self.latency.groups.values()):
            return None
        kernels = list(kernels)
        isolated = self.predict(kernels, allow_fallback, isolated=True)
        low, high = np.zeros(len(kernels)), np.zeros(len(kernels))
        ood = np.zeros(len(kernels), dtype=bool)
        learned = [i for i, k in enumerate(kernels) if k.kind not in self.free_kinds and self.scorable(k)]
        other = [i for i, k in enumerate(kernels) if k.kind not in self.free_kinds and not self.scorable(k)]
        if learned:
            x = features([kernels[i] for i in learned], self.p, self.dtype_bytes, self.vector_depthwise)
            lo, hi, flag = self.latency.interval_log(x, [kernels[i].kind for i in learned])
            unseen = np.array([not self.op_seen(kernels[i]) for i in learned])
            # An op never measured: the band of a roofline guess (no held-out figure says better).
            lo = np.where(unseen, np.minimum(lo, -np.log(FALLBACK_BAND)), lo)
            hi = np.where(unseen, np.maximum(hi, np.log(FALLBACK_BAND)), hi)
            # The band lives in the model's log space: log(y + offset) (offset 0 for plain logs).
            shift = self.latency.log_offset
            low[learned] = np.maximum((isolated[learned] + shift) * np.exp(lo) - shift, 0.0)
            high[learned] = (isolated[learned] + shift) * np.exp(hi) - shift
            ood[learned] = flag | unseen
        if other:  # the roofline: no held-out figure, a wide stated band, always out of distribution
            low[other], high[other] = isolated[other] / FALLBACK_BAND, isolated[other] * FALLBACK_BAND
            ood[other] = True
        if self.in_model is not None:
            paid = np.array([k.kind not in self.free_kinds for k in kernels])
            conversions = np.array([self.in_model.conversion_us(k) for k in kernels])
            low = np.where(paid, self.in_model.kernels_us(low), 0.0) + conversions
            high = np.where(paid, self.in_model.kernels_us(high), 0.0) + conversions
        return low, high, ood

    def op_seen(self, kernel: Kernel) -> bool:
        """Whether the training table holds a kernel of this kind and op (True when the index does not say)."""
        return self.ops is None or f"{kernel.kind}:{kernel.op}" in self.ops

    def outside(self, kernel: Kernel) -> list[str]:
        """Which size features of a kernel lie outside its group's training range (and ``op`` when the
        table never measured its op)."""
        if not self.scorable(kernel) or kernel.kind in self.free_kinds:
            return [] if kernel.kind in self.free_kinds else ["kind"]
        row = features([kernel], self.p, self.dtype_bytes, self.vector_depthwise)[0]
        columns = self.latency.outside_columns(row, kernel.kind)
        return [OUTSIDE_NAMES.get(c, c) for c in columns] + ([] if self.op_seen(kernel) else [f"op {kernel.op}"])

    def predict_dram(self, kernels: Sequence[Kernel], allow_fallback: bool | None = None) -> np.ndarray | None:
        """Off-chip traffic (bytes) of each kernel, or None where the target's backend does not measure it."""
        if self.dram is None:
            return None
        from hwopt.estimator.fallback import kernel_bytes

        return self._predict(kernels, self.dram, self._dram_cache,
                             lambda ks: np.array([kernel_bytes(k, self.dtype_bytes) for k in ks], dtype=float),
                             allow_fallback)

    # -- per model -------------------------------------------------------------------------------
    def schedule_of(self, model: onnx.ModelProto | str | Path) -> Schedule:
        """The target's schedule of a model (canonicalised first: shapes, folded BatchNorm, constants)."""
        from hwopt.canonical.canonicalize import canonicalize
        from hwopt.io.model import load_model

        proto = load_model(model) if isinstance(model, (str, Path)) else model
        canonical, _ = canonicalize(proto, verify=False)
        return schedule(canonical, self.target.fusion)

    def estimate(self, schedule_or_model: Schedule | onnx.ModelProto | str | Path,
                 allow_fallback: bool | None = None) -> ModelEstimate:
        """Latency (sum over the schedule), memory and off-chip traffic of a model."""
        sched = schedule_or_model if isinstance(schedule_or_model, Schedule) else self.schedule_of(schedule_or_model)
        kernels = [sk.kernel for sk in sched.kernels]
        latency = self.predict(kernels, allow_fallback)
        isolated = self.predict(kernels, allow_fallback, isolated=True) if self.in_model is not None else latency
        dram = self.predict_dram(kernels, allow_fallback)
        band = self.interval(kernels, allow_fallback)
        params, peak = param_bytes(sched, self.p, self.dtype_bytes), peak_activation_bytes(sched, self.p, self.dtype_bytes)
        memory = on_chip(params, peak, self.target)
        charge = memory.charge_us if memory is not None else 0.0
        per_kernel, fallbacks = [], []
        for i, sk in enumerate(sched.kernels):
            k = sk.kernel
            fallback = not self.scorable(k)
            if fallback:
                fallbacks.append(f"{k.describe()} [{', '.join(sk.nodes)}]")
            estimate = KernelEstimate(k.describe(), k.kind, float(latency[i]), None if dram is None else float(dram[i]),
                                      sk.nodes, free=k.kind in self.free_kinds, fallback=fallback)
            if band is not None:
                estimate.low_us, estimate.high_us = float(band[0][i]), float(band[1][i])
                estimate.ood = bool(band[2][i])
                estimate.outside = self.outside(k) if estimate.ood else []
            per_kernel.append(estimate)
        return ModelEstimate(
            latency_us=float(latency.sum()) + charge, per_kernel=per_kernel,
            param_bytes=params, peak_activation_bytes=peak,
            dram_bytes=None if dram is None else float(dram.sum()), fallbacks=fallbacks, target=self.target.name,
            in_model_us=float(latency.sum() - isolated.sum()), memory_basis=basis(self.p, self.target.dtype),
            low_us=None if band is None else float(band[0].sum()) + charge,
            high_us=None if band is None else float(band[1].sum()) + charge, onchip=memory)


def load_estimator(target: str | Path | Target = DEFAULT_TARGET, folder: str | Path | None = None,
                   allow_fallback: bool = False) -> Estimator:
    """The trained estimator of a target (its folder ``estimator/<name>/``, or ``folder``)."""
    t = target if isinstance(target, Target) else load_target(target)
    where = Path(folder) if folder is not None else t.folder
    index = where / INDEX
    try:
        meta = json.loads(index.read_text())
    except FileNotFoundError:
        raise HwoptError(f"target {t.name!r} has no trained estimator in {where} "
                         f"(train one: hwopt train TABLE -o {where})") from None
    except ValueError as exc:
        raise HwoptError(f"{index}: not an estimator index ({exc})") from None
    if meta.get("parallelism") != t.parallelism or meta.get("dtype_bytes") != t.dtype_bytes:
        raise HwoptError(f"{index}: trained for P={meta.get('parallelism')}, {meta.get('dtype_bytes')}-byte dtype; "
                         f"target {t.name!r} has P={t.parallelism}, {t.dtype_bytes}-byte: retrain it")
    latency = KernelRegressor.load(where, meta["latency"])
    dram = KernelRegressor.load(where, meta["dram"]) if meta.get("dram") else None
    in_model = InModelTerm.from_dict(meta["in_model"]) if meta.get("in_model") else None
    ops = frozenset(meta["ops"]) if isinstance(meta.get("ops"), list) else None
    return Estimator(t, latency, dram, Roofline(**meta["roofline"]), allow_fallback, where, in_model, ops)
