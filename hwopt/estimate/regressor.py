"""Per-kind latency regressors: a log-linear base plus boosted trees on its residual, in XGBoost's JSON.

Latency spans five decades and follows a few work figures (the first-order
cycle model ``log_proxy``, bytes, FLOPs) almost as a power law, which trees
cannot extrapolate. So each group first fits a ridge regression of log
latency on log work figures (one of ``features.BASE_SETS``, chosen by
cross-validation), and an XGBoost regressor learns the
residual in log space from every feature (the P staircase, folds, kind...).
Prediction = exp(base + trees). Groups: one per kernel kind with at least
``MIN_ROWS`` rows, and one shared group (kind is a feature) for the rest.

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

from hwopt.atomic import atomic_write, atomic_write_text
from hwopt.errors import HwoptError
from hwopt.estimate.features import BASE_SETS, FEATURES, KIND_CODE

MIN_ROWS = 40
MIN_CV_ROWS = MIN_ROWS  # fewer rows: 3-fold CV scores are noise; the most regularised grid point is used
SHARED = "shared"
GRID = {"max_depth": (4, 6), "learning_rate": (0.1,), "n_estimators": (200,), "min_child_weight": (1, 4)}
FOLDS = 3
SEED = 0
RIDGE = 1e-3

Progress = Callable[[str, int, int], None]


def _design(x: np.ndarray, base: Sequence[int]) -> np.ndarray:
    return np.column_stack([np.ones(len(x)), x[:, list(base)]])


def _fit_base(x: np.ndarray, y: np.ndarray, base: Sequence[int]) -> np.ndarray:
    a = _design(x, base)
    penalty = RIDGE * len(x) * np.eye(a.shape[1])
    penalty[0, 0] = 0.0  # never shrink the intercept
    return np.linalg.solve(a.T @ a + penalty, a.T @ y)


def _booster(params: dict, x: np.ndarray, y: np.ndarray) -> xgb.Booster:
    """XGBoost's native API (no scikit-learn dependency)."""
    # Two threads (a shared machine) and only for larger groups: on a few hundred rows threads cost more.
    options = {"objective": "reg:squarederror", "seed": SEED, "nthread": 2 if len(x) >= 2000 else 1,
               "tree_method": "hist",
               "subsample": 0.9, "colsample_bytree": 0.9, "eta": params["learning_rate"],
               "max_depth": params["max_depth"], "min_child_weight": params["min_child_weight"]}
    return xgb.train(options, xgb.DMatrix(x, label=y), num_boost_round=params["n_estimators"])


def _cv_rmse(params: dict, x: np.ndarray, y: np.ndarray, base: Sequence[int]) -> float:
    folds = np.random.default_rng(SEED).permutation(len(x)) % FOLDS
    errors = []
    for fold in range(FOLDS):
        train, test = folds != fold, folds == fold
        coef = _fit_base(x[train], y[train], base)
        base_tr, base_te = _design(x[train], base) @ coef, _design(x[test], base) @ coef
        model = _booster(params, x[train], y[train] - base_tr)
        errors.append((model.inplace_predict(x[test]) + base_te - y[test]) ** 2)
    return float(np.sqrt(np.mean(np.concatenate(errors))))


@dataclass
class Group:
    name: str
    base: np.ndarray  # coefficients: intercept, then one per base column
    booster: xgb.Booster
    params: dict
    cv_rmse: float
    rows: int
    base_columns: tuple[int, ...] = ()


@dataclass
class KernelRegressor:
    """Log-target regressors by kernel kind; ``predict`` returns the target quantity (exp of the log)."""

    groups: dict[str, Group] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)  # kinds seen in training (the rest are refused)
    quantity: str = "latency_us"

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
        logy = np.log(y)
        counts = {k: int(np.sum(kinds == k)) for k in dict.fromkeys(kinds.tolist())}
        own = [k for k, c in counts.items() if c >= MIN_ROWS]
        shared_mask = ~np.isin(kinds, own)
        plan = [(k, kinds == k) for k in own] + ([(SHARED, shared_mask)] if shared_mask.any() else [])
        grid = grid or GRID
        combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        out = cls(kinds=sorted(counts), quantity=quantity)
        for step, (name, mask) in enumerate(plan):
            xs, ys = x[mask], logy[mask]
            if progress:
                progress(f"training {quantity}", step, len(plan))
            if len(xs) >= MIN_CV_ROWS:
                # The base's columns first (with the first grid point), then the grid with that base.
                base = min(BASE_SETS, key=lambda b: _cv_rmse(combos[0], xs, ys, b))
                rmse, best = min((_cv_rmse(p, xs, ys, base), i) for i, p in enumerate(combos))
                params = combos[best]
            else:  # too few rows for CV figures to mean much: the smallest, most regularised model
                base, rmse, params = BASE_SETS[0], float("nan"), {**combos[0], "n_estimators": 50}
            coef = _fit_base(xs, ys, base)
            model = _booster(params, xs, ys - _design(xs, base) @ coef)
            out.groups[name] = Group(name, coef, model, params, rmse, int(mask.sum()), tuple(base))
        if progress:
            progress(f"training {quantity}", len(plan), len(plan))
        return out

    def predict(self, x: np.ndarray, kinds: Sequence[str]) -> np.ndarray:
        """Predictions for rows of known kinds (callers check ``kinds`` first)."""
        out = np.empty(len(x))
        kinds = np.asarray(kinds)
        for name in {self.group_of(k) for k in kinds.tolist()}:
            mask = np.array([self.group_of(k) == name for k in kinds.tolist()])
            group = self.groups[name]
            margin = group.booster.inplace_predict(x[mask]) + _design(x[mask], group.base_columns) @ group.base
            out[mask] = np.exp(margin)
        return out

    # -- persistence -----------------------------------------------------------------------------
    def save(self, folder: str | Path, name: str) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        meta = {"format": "hwopt-kernel-regressor/1", "quantity": self.quantity, "features": list(FEATURES),
                "kind_codes": KIND_CODE, "kinds": self.kinds, "groups": {}}
        for group in self.groups.values():
            path = folder / f"{name}.{group.name}.json"
            raw = bytes(group.booster.save_raw(raw_format="json"))  # what save_model writes to a .json
            atomic_write(path, lambda handle, raw=raw: handle.write(raw))
            written.append(path)
            meta["groups"][group.name] = {"model": path.name, "base": group.base.tolist(),
                                          "base_columns": [FEATURES[i] for i in group.base_columns],
                                          "params": group.params,
                                          "cv_rmse_log": group.cv_rmse, "rows": group.rows}
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
        if meta.get("features") != list(FEATURES):
            raise HwoptError(f"{index}: trained with other features than this hwopt version: retrain it")
        out = cls(kinds=list(meta["kinds"]), quantity=meta["quantity"])
        for gname, g in meta["groups"].items():
            booster = xgb.Booster()
            try:
                booster.load_model(str(folder / g["model"]))
            except xgb.core.XGBoostError as exc:
                raise HwoptError(f"{folder / g['model']}: cannot load the XGBoost model ({exc})") from None
            booster.set_param({"nthread": 1})  # small batches: threads cost more than they save
            out.groups[gname] = Group(gname, np.asarray(g["base"], dtype=np.float64), booster, g["params"],
                                      g["cv_rmse_log"], g["rows"],
                                      tuple(FEATURES.index(c) for c in g["base_columns"]))
        return out
