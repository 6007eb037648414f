"""Per-kind latency regressors: a log-linear base plus boosted trees on its residual, in XGBoost's JSON.

Latency spans five decades and follows a few work figures (the first-order
cycle model ``log_proxy``, bytes, FLOPs) almost as a power law, which trees
cannot extrapolate. So each group first fits a ridge regression of log
latency on log work figures (one of ``features.BASE_SETS``, chosen by
cross-validation), and an XGBoost regressor learns the
residual in log space from every feature (the P staircase, folds, kind...).
The candidate bases include an *offset* base: slope 1 on the prior
(``features.OFFSET_BASES``), only the intercept fitted. The base is chosen by
how the whole model extrapolates: trained on a group's smaller two thirds (by
the prior), scored on its largest third, as the search scores kernels larger
than any in the table (a ridge slope below 1, fitted where set-up costs
dominate, under-predicts large kernels).
Prediction = exp(base + trees). Groups: one per kernel kind with at least
``MIN_ROWS`` rows, and one shared group (kind is a feature) for the rest.

Uncertainty: each group keeps the 10th and 90th percentiles of its
out-of-fold log residuals (an 80% interval, conformal style: what the model
missed by on rows it had not seen), the error it made extrapolating (the base
choice's score), and the range of a few size columns over its training rows.
A kernel outside those ranges is flagged out of distribution and its interval
widened by the extrapolation error on both sides.

Hyper-parameters come from a small seeded grid, scored by K-fold
cross-validation (RMSE of log latency); the final model is refit on all
rows. Saved as ``<name>.<group>.json`` (XGBoost's own JSON model format) plus
``<name>.json`` with the groups, base coefficients and chosen parameters:
no pickle anywhere.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import xgboost as xgb

from hwopt.io.atomic import atomic_write, atomic_write_text
from hwopt.errors import HwoptError
from hwopt.estimator.features import BASE_SETS, FEATURES, KIND_CODE, OFFSET_BASES

# The log target is log(y + LOG_OFFSET) (predictions subtract it again; saved with the model). 0: plain logs.
# An offset of a small figure (1 us) keeps kernels a compiler merges into a neighbour (cost 0 there, a
# floor row of 0.001 us) from sitting seven log units below every real kernel of their kind.
LOG_OFFSET = 0.0
MIN_ROWS = 40
# A kind with SMALL_ROWS to MIN_ROWS rows (Ethos-U's concat, resize, pool, softmax: a few dozen in-context
# rows) gets a group of its own all the same: the prior scaled by one factor (its cost is nearly proportional
# to the elements moved) and a few shallow trees. Pooled into one shared group, kinds whose costs differ by
# decades (a concat Vela merges away, a resize over a 184x184 map) were mis-scaled by up to 10x.
SMALL_ROWS = 10
SMALL_PARAMS = {"max_depth": 2, "learning_rate": 0.1, "n_estimators": 50, "min_child_weight": 4}
MIN_CV_ROWS = MIN_ROWS  # fewer rows: 3-fold CV scores are noise; the most regularised grid point is used
SHARED = "shared"
GRID = {"max_depth": (4, 6), "learning_rate": (0.1,), "n_estimators": (200,), "min_child_weight": (1, 4)}
FOLDS = 3
SEED = 0
RIDGE = 1e-3

Progress = Callable[[str, int, int], None]
QUANTILES = (0.1, 0.9)  # the per-kernel interval: an 80% band of out-of-fold residuals
# Size columns whose training range defines "in distribution" (a kernel outside any of them is flagged).
RANGE_COLUMNS = ("log_prior", "log_macs", "log_in_bytes", "log_out_bytes", "log_param_bytes", "out_h", "out_w",
                 "kernel", "stride")
EXTRAPOLATE = 2 / 3  # the base is chosen by training below this quantile of the prior, scoring above it
# A base: (ridge columns, offset column or None).
Base = tuple[tuple[int, ...], "int | None"]
BASES: tuple[Base, ...] = tuple((b, None) for b in BASE_SETS) + tuple(((), o) for o in OFFSET_BASES)


def _design(x: np.ndarray, base: Sequence[int]) -> np.ndarray:
    return np.column_stack([np.ones(len(x)), x[:, list(base)]])


def _offset(x: np.ndarray, offset: int | None) -> np.ndarray:
    return x[:, offset] if offset is not None else np.zeros(len(x))


def _fit_base(x: np.ndarray, y: np.ndarray, base: Sequence[int], offset: int | None = None) -> np.ndarray:
    if not base and offset is not None:
        # The prior scaled by one factor: its median, so that a kernel a compiler merged into a neighbour
        # (a floor row, ~13 log units below the rest) does not pull the whole kind down.
        return np.array([float(np.median(y - _offset(x, offset)))])
    a = _design(x, base)
    penalty = RIDGE * len(x) * np.eye(a.shape[1])
    penalty[0, 0] = 0.0  # never shrink the intercept
    return np.linalg.solve(a.T @ a + penalty, a.T @ (y - _offset(x, offset)))


def _base_value(x: np.ndarray, coef: np.ndarray, base: Sequence[int], offset: int | None) -> np.ndarray:
    return _design(x, base) @ coef + _offset(x, offset)


def _booster(params: dict, x: np.ndarray, y: np.ndarray) -> xgb.Booster:
    """XGBoost's native API (no scikit-learn dependency)."""
    # Two threads (a shared machine) and only for larger groups: on a few hundred rows threads cost more.
    options = {"objective": "reg:squarederror", "seed": SEED, "nthread": 2 if len(x) >= 2000 else 1,
               "tree_method": "hist",
               "subsample": 0.9, "colsample_bytree": 0.9, "eta": params["learning_rate"],
               "max_depth": params["max_depth"], "min_child_weight": params["min_child_weight"]}
    return xgb.train(options, xgb.DMatrix(x, label=y), num_boost_round=params["n_estimators"])


def _split_rmse(params: dict, x: np.ndarray, y: np.ndarray, base: Base, train: np.ndarray) -> np.ndarray:
    columns, offset = base
    test = ~train
    coef = _fit_base(x[train], y[train], columns, offset)
    model = _booster(params, x[train], y[train] - _base_value(x[train], coef, columns, offset))
    return (model.inplace_predict(x[test]) + _base_value(x[test], coef, columns, offset) - y[test]) ** 2


def _cv_rmse(params: dict, x: np.ndarray, y: np.ndarray, base: Base) -> float:
    folds = np.random.default_rng(SEED).permutation(len(x)) % FOLDS
    errors = [_split_rmse(params, x, y, base, folds != fold) for fold in range(FOLDS)]
    return float(np.sqrt(np.mean(np.concatenate(errors))))


def _oof_residuals(params: dict, x: np.ndarray, y: np.ndarray, base: Base) -> np.ndarray:
    """Out-of-fold residuals (truth - prediction, log) of the chosen model."""
    columns, offset = base
    folds = np.random.default_rng(SEED + 1).permutation(len(x)) % FOLDS
    out = np.empty(len(x))
    for fold in range(FOLDS):
        train, test = folds != fold, folds == fold
        coef = _fit_base(x[train], y[train], columns, offset)
        model = _booster(params, x[train], y[train] - _base_value(x[train], coef, columns, offset))
        out[test] = y[test] - model.inplace_predict(x[test]) - _base_value(x[test], coef, columns, offset)
    return out


def _extrapolation_rmse(params: dict, x: np.ndarray, y: np.ndarray, base: Base) -> float:
    """Trained on the smaller kernels (by the prior), scored on the largest ones."""
    size = x[:, OFFSET_BASES[0]]
    train = size <= np.quantile(size, EXTRAPOLATE)
    if train.all() or not train.any():
        return _cv_rmse(params, x, y, base)
    return float(np.sqrt(np.mean(_split_rmse(params, x, y, base, train))))


@dataclass
class Group:
    name: str
    base: np.ndarray  # coefficients: intercept, then one per base column
    booster: xgb.Booster
    params: dict
    cv_rmse: float
    rows: int
    base_columns: tuple[int, ...] = ()
    offset: int | None = None  # a column added to the base with slope 1
    interval: tuple[float, float] = (0.0, 0.0)  # out-of-fold log residual quantiles (QUANTILES)
    extrapolation: float = 0.0  # log RMSE trained on the smaller two thirds, scored on the largest third
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # RANGE_COLUMNS' training range


@dataclass
class KernelRegressor:
    """Log-target regressors by kernel kind; ``predict`` returns the target quantity (exp of the log)."""

    groups: dict[str, Group] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)  # kinds seen in training (the rest are refused)
    quantity: str = "latency_us"
    # The columns of ``features()`` this model was trained on (an older model: a subset of today's).
    columns: tuple[int, ...] = tuple(range(len(FEATURES)))
    log_offset: float = 0.0  # the model learns log(y + log_offset)

    def group_of(self, kind: str) -> str:
        return kind if kind in self.groups else SHARED

    @classmethod
    def fit(cls, x: np.ndarray, kinds: Sequence[str], y: np.ndarray, quantity: str = "latency_us",
            progress: Progress | None = None, grid: dict | None = None) -> "KernelRegressor":
        """Fit on features ``x`` (rows of FEATURES), kernel kinds and positive targets ``y``."""
        if len(x) == 0:
            raise HwoptError(f"no rows to train the {quantity} model on")
        if np.any(~np.isfinite(y)) or np.any(y <= 0):
            raise HwoptError(f"{quantity}: training targets must be positive and finite")
        kinds = np.asarray(kinds)
        logy = np.log(y + LOG_OFFSET)
        counts = {k: int(np.sum(kinds == k)) for k in dict.fromkeys(kinds.tolist())}
        own = [k for k, c in counts.items() if c >= MIN_ROWS]
        small = [k for k, c in counts.items() if SMALL_ROWS <= c < MIN_ROWS]
        shared_mask = ~np.isin(kinds, own + small)
        plan = ([(k, kinds == k) for k in own] + [(k, kinds == k) for k in small]
                + ([(SHARED, shared_mask)] if shared_mask.any() else []))
        grid = grid or GRID
        combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        out = cls(kinds=sorted(counts), quantity=quantity, log_offset=LOG_OFFSET)
        for step, (name, mask) in enumerate(plan):
            xs, ys = x[mask], logy[mask]
            if progress:
                progress(f"training {quantity}", step, len(plan))
            if name in small:
                base, params = ((), OFFSET_BASES[0]), SMALL_PARAMS
                rmse = _cv_rmse(params, xs, ys, base)
                residuals = _oof_residuals(params, xs, ys, base)
                # A few dozen rows: the band is at least the stated guess of a group too small to score.
                spread = (min(float(np.quantile(residuals, QUANTILES[0])), -0.5),
                          max(float(np.quantile(residuals, QUANTILES[1])), 0.5))
                extrapolation = max(_extrapolation_rmse(params, xs, ys, base), 0.5)
            elif len(xs) >= MIN_CV_ROWS:
                # The base first, by how it extrapolates (with the first grid point), then the grid with it.
                scored = {b: _extrapolation_rmse(combos[0], xs, ys, b) for b in BASES}
                base = min(BASES, key=scored.__getitem__)
                rmse, best = min((_cv_rmse(p, xs, ys, base), i) for i, p in enumerate(combos))
                params = combos[best]
                residuals = _oof_residuals(params, xs, ys, base)
                spread = tuple(float(q) for q in np.quantile(residuals, QUANTILES))
                extrapolation = scored[base]
            else:  # too few rows for CV figures to mean much: the smallest, most regularised model
                base, rmse, params = BASES[0], float("nan"), {**combos[0], "n_estimators": 50}
                spread, extrapolation = (-0.5, 0.5), 0.5  # no held-out figure: a wide, stated guess
            columns, offset = base
            coef = _fit_base(xs, ys, columns, offset)
            model = _booster(params, xs, ys - _base_value(xs, coef, columns, offset))
            ranges = {c: (float(xs[:, FEATURES.index(c)].min()), float(xs[:, FEATURES.index(c)].max()))
                      for c in RANGE_COLUMNS}
            out.groups[name] = Group(name, coef, model, params, rmse, int(mask.sum()), tuple(columns), offset,
                                     spread, extrapolation, ranges)
        if progress:
            progress(f"training {quantity}", len(plan), len(plan))
        return out

    def predict(self, x: np.ndarray, kinds: Sequence[str]) -> np.ndarray:
        """Predictions for rows of known kinds (callers check ``kinds`` first)."""
        if not self.log_offset:
            return np.exp(self.predict_log(x, kinds))
        # Never 0 or below: a kernel costs at least the floor of one NPU cycle's worth.
        return np.maximum(np.exp(self.predict_log(x, kinds)) - self.log_offset, 1e-3)

    def interval_log(self, x: np.ndarray, kinds: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: the interval's low and high log offsets from the prediction, and whether the row lies
        outside its group's training range (then widened by the group's extrapolation error)."""
        low, high, ood = np.zeros(len(x)), np.zeros(len(x)), np.zeros(len(x), dtype=bool)
        kinds = np.asarray(kinds)
        for name in {self.group_of(k) for k in kinds.tolist()}:
            mask = np.array([self.group_of(k) == name for k in kinds.tolist()])
            group = self.groups[name]
            outside = np.zeros(int(mask.sum()), dtype=bool)
            for column, (lo, hi) in group.ranges.items():
                values = x[mask, FEATURES.index(column)]
                outside |= (values < lo - 1e-9) | (values > hi + 1e-9)
            widen = np.where(outside, group.extrapolation, 0.0)
            low[mask] = group.interval[0] - widen
            high[mask] = group.interval[1] + widen
            ood[mask] = outside
        return low, high, ood

    def outside_columns(self, x_row: np.ndarray, kind: str) -> list[str]:
        """The size columns of one row (``features`` layout) outside its group's training range."""
        group = self.groups[self.group_of(kind)]
        return [c for c, (lo, hi) in group.ranges.items()
                if not lo - 1e-9 <= x_row[FEATURES.index(c)] <= hi + 1e-9]

    def predict_log(self, x: np.ndarray, kinds: Sequence[str]) -> np.ndarray:
        """Log of the predictions (the model's own scale)."""
        if len(self.columns) != x.shape[1]:
            x = x[:, list(self.columns)]
        out = np.empty(len(x))
        kinds = np.asarray(kinds)
        for name in {self.group_of(k) for k in kinds.tolist()}:
            mask = np.array([self.group_of(k) == name for k in kinds.tolist()])
            group = self.groups[name]
            out[mask] = (group.booster.inplace_predict(x[mask])
                         + _base_value(x[mask], group.base, group.base_columns, group.offset))
        return out

    # -- persistence -----------------------------------------------------------------------------
    def save(self, folder: str | Path, name: str) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        meta = {"format": "hwopt-kernel-regressor/1", "quantity": self.quantity, "log_offset": self.log_offset,
                "features": [FEATURES[i] for i in self.columns],
                "kind_codes": KIND_CODE, "kinds": self.kinds, "groups": {}}
        for group in self.groups.values():
            path = folder / f"{name}.{group.name}.json"
            raw = bytes(group.booster.save_raw(raw_format="json"))  # what save_model writes to a .json
            atomic_write(path, lambda handle, raw=raw: handle.write(raw))
            written.append(path)
            meta["groups"][group.name] = {"model": path.name, "base": group.base.tolist(),
                                          "base_columns": [FEATURES[self.columns[i]] for i in group.base_columns],
                                          **({"base_offset": FEATURES[self.columns[group.offset]]}
                                             if group.offset is not None else {}),
                                          "params": group.params,
                                          "cv_rmse_log": group.cv_rmse, "rows": group.rows,
                                          "interval_log": list(group.interval),
                                          "extrapolation_rmse_log": group.extrapolation,
                                          "ranges": {c: list(v) for c, v in group.ranges.items()}}
        index = folder / f"{name}.json"
        atomic_write_text(index, json.dumps(meta, indent=1, sort_keys=True) + "\n")
        return [index] + written

    @classmethod
    def load(cls, folder: str | Path, name: str) -> "KernelRegressor":
        folder = Path(folder)
        index = folder / f"{name}.json"
        try:
            meta = json.loads(index.read_text())
        except FileNotFoundError:
            raise HwoptError(f"{index}: no trained estimator here (train one with 'hwopt train')") from None
        except ValueError as exc:
            raise HwoptError(f"{index}: not an estimator index ({exc})") from None
        names = meta.get("features") or []
        if not names or not set(names) <= set(FEATURES):
            raise HwoptError(f"{index}: trained with other features than this hwopt version: retrain it")
        # A model trained before a feature was added reads its own columns.
        out = cls(kinds=list(meta["kinds"]), quantity=meta["quantity"],
                  columns=tuple(FEATURES.index(n) for n in names), log_offset=float(meta.get("log_offset", 0.0)))
        for gname, g in meta["groups"].items():
            booster = xgb.Booster()
            try:
                booster.load_model(str(folder / g["model"]))
            except xgb.core.XGBoostError as exc:
                raise HwoptError(f"{folder / g['model']}: cannot load the XGBoost model ({exc})") from None
            booster.set_param({"nthread": 1})  # small batches: threads cost more than they save
            out.groups[gname] = Group(gname, np.asarray(g["base"], dtype=np.float64), booster, g["params"],
                                      g["cv_rmse_log"], g["rows"], tuple(names.index(c) for c in g["base_columns"]),
                                      names.index(g["base_offset"]) if g.get("base_offset") else None,
                                      # An estimator trained before intervals: none (0, 0), no ranges.
                                      tuple(g.get("interval_log", (0.0, 0.0))), g.get("extrapolation_rmse_log", 0.0),
                                      {c: tuple(v) for c, v in g.get("ranges", {}).items()})
        return out
