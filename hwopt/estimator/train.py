"""Training an estimator folder from a measurements table (a shipped target's, or a user's device).

Writes into the output folder: ``latency.json`` + ``latency.<group>.json``
(XGBoost JSON models), ``dram.*`` where the table has off-chip traffic
(``dram_bytes``), ``estimator.json`` (the index: target P and dtype, model
names, the calibrated fallback roofline, and the in-model term when models
measured end to end are given: ``hwopt.estimator.in_model``) and the card (``card.json`` +
``CARD.md``) describing the training data; ``bench/estimator_accuracy.py``
adds the held-out accuracy figures to the card.
"""

from __future__ import annotations

import collections
import json
import shutil
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from hwopt.io.atomic import atomic_write_text
from hwopt.backends.base import Measurement
from hwopt.backends.ort_layout import parse_nodes
from hwopt.errors import HwoptError
from hwopt.estimator.card import write_card
from hwopt.estimator.estimator import INDEX, Estimator
from hwopt.estimator.in_model import (InModelTerm, fit_conversion_cost, fit_in_model_term, fit_signed_term,
                                     spans_sizes)
from hwopt.analysis.layout import reorder_bytes
from hwopt.estimator.fallback import Roofline
from hwopt.estimator.features import features
from hwopt.estimator.regressor import KernelRegressor
from hwopt.analysis.kernel import Schedule
from hwopt.targets import Target

Progress = Callable[[str, int, int], None]
MIN_TRAIN_ROWS = 10


def _rounded(value: float) -> float | None:
    return None if value != value else round(value, 4)  # NaN (no CV) as null: strict JSON


def usable(measurements: Sequence[Measurement]) -> list[Measurement]:
    """Rows a regressor can learn from: scorable kinds with a positive latency (views are free by rule)."""
    return [m for m in measurements if m.kernel.kind not in ("view", "unknown") and m.latency_us > 0
            and np.isfinite(m.latency_us)]


class EndToEnd(NamedTuple):
    """A whole model measured end to end on the target (and, where measured, its layout conversions)."""

    model: str
    schedule: Schedule
    latency_us: float
    reorders: int = 0  # conversions the runtime ran (hwopt.backends.ort_layout)
    reorder_bytes: int = 0
    reorder_us: float = float("nan")  # their measured time inside the model (nan: not measured)
    reorder_nodes: tuple[tuple[int, float], ...] = ()  # each conversion's (bytes, us), where profiled


def read_end_to_end(path: str | Path, target: Target) -> list[EndToEnd]:
    """Whole models measured end to end: a CSV with ``model`` (a path relative to the CSV) and ``latency_us``,
    optionally ``reorders``, ``reorder_bytes``, ``reorder_us``, ``reorder_nodes`` (``hwopt measure --json``'s
    meta)."""
    import csv

    from hwopt.canonical.canonicalize import canonicalize
    from hwopt.analysis.kernels import schedule
    from hwopt.io.model import load_model

    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HwoptError(f"{path}: cannot read the end-to-end table ({exc})") from None
    if not rows or not {"model", "latency_us"} <= set(rows[0]):
        raise HwoptError(f"{path}: needs the columns model, latency_us")
    out = []
    for number, row in enumerate(rows, 2):
        try:
            latency = float(row["latency_us"])
            layout = (int(row.get("reorders") or 0), int(row.get("reorder_bytes") or 0),
                      float(row.get("reorder_us") or "nan"), tuple(parse_nodes(row.get("reorder_nodes", ""))))
        except (TypeError, ValueError):
            raise HwoptError(f"{path}:{number}: latency_us and reorder columns must be numbers") from None
        canonical, _ = canonicalize(load_model(path.parent / row["model"]), verify=False)
        out.append(EndToEnd(row["model"], schedule(canonical, target.fusion), latency, *layout))
    return out


def _in_model(target: Target, latency, roofline: Roofline, end_to_end: Sequence[EndToEnd]):
    """The in-model term fitted against this estimator's own isolated kernel sums."""
    end_to_end = [EndToEnd(*e) for e in end_to_end]
    bare = Estimator(target, latency, None, roofline, allow_fallback=True)
    nodes = [node for e in end_to_end for node in e.reorder_nodes]
    if nodes:  # single conversions, as the profiler timed them
        cost = fit_conversion_cost([1] * len(nodes), [b for b, _ in nodes], [us for _, us in nodes])
    else:
        cost = fit_conversion_cost([e.reorders for e in end_to_end], [e.reorder_bytes for e in end_to_end],
                                   [e.reorder_us for e in end_to_end])
    pricing = InModelTerm(1.0, 0.0, 0, 0.0, *cost)
    sums, counts, converted = [], [], []
    for e in end_to_end:
        kernels = [sk.kernel for sk in e.schedule.kernels]
        sums.append(float(bare.predict(kernels).sum()))
        counts.append(sum(1 for k in kernels if k.kind not in bare.free_kinds))
        converted.append(sum(pricing.conversion_us(k) for k in kernels))
    lists = [bare.predict([sk.kernel for sk in e.schedule.kernels if sk.kernel.kind not in bare.free_kinds])
             for e in end_to_end]
    if spans_sizes(lists):  # small and large kernels: the signed per-kernel cost is identifiable
        predicted = [[reorder_bytes(sk.kernel) for sk in e.schedule.kernels] for e in end_to_end]
        term = fit_signed_term(lists, [e.latency_us for e in end_to_end], [sum(c for c, _ in p) for p in predicted],
                               [sum(b for _, b in p) for p in predicted], cost[1])
        converted = [sum(term.conversion_us(sk.kernel) for sk in e.schedule.kernels) for e in end_to_end]
        estimates = [float(term.kernels_us(k).sum()) + c for k, c in zip(lists, converted)]
    else:
        term = fit_in_model_term(sums, counts, [e.latency_us for e in end_to_end], converted, cost)
        estimates = [term.apply(s, n, c) for s, n, c in zip(sums, counts, converted)]
    models = [{"model": e.model, "measured_us": round(e.latency_us, 3), "kernel_sum_us": round(s, 3), "kernels": n,
               "conversions_us": round(c, 3), "estimate_us": round(est, 3)}
              for e, s, n, c, est in zip(end_to_end, sums, counts, converted, estimates)]
    return term, models


def train_estimator(measurements: Sequence[Measurement], target: Target, output: str | Path,
                    progress: Progress | None = None, source: str = "", grid: dict | None = None,
                    end_to_end: Sequence[EndToEnd] = ()) -> dict:
    """Fit the latency (and, where measured, off-chip traffic) regressors; write the folder; return its card.

    ``end_to_end``: whole models timed on the target (``EndToEnd``, or plain (name, schedule, latency us)
    tuples), for the in-model term (none: the estimate is the kernel sum).
    """
    start = time.perf_counter()
    rows = usable(measurements)
    if len(rows) < MIN_TRAIN_ROWS:
        raise HwoptError(f"{source or 'the table'}: {len(rows)} usable rows; at least {MIN_TRAIN_ROWS} are needed")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    kernels = [m.kernel for m in rows]
    kinds = [k.kind for k in kernels]
    x = features(kernels, target.parallelism, target.dtype_bytes, target.depthwise == "vector")
    latency = np.array([m.latency_us for m in rows])
    lat_model = KernelRegressor.fit(x, kinds, latency, "latency_us", progress, grid)
    written = lat_model.save(output, "latency")
    with_dram = np.array([m.dram_bytes is not None and m.dram_bytes > 0 for m in rows])
    dram_model = None
    # Off-chip traffic only where the backend measures it for (nearly) every row: a head trained on a few
    # rows would be a guess presented as a measurement.
    if with_dram.mean() >= 0.9:
        dram = np.array([m.dram_bytes or 0.0 for m in rows])
        dram_model = KernelRegressor.fit(x[with_dram], [k for k, d in zip(kinds, with_dram) if d], dram[with_dram],
                                         "dram_bytes", progress, grid)
        written += dram_model.save(output, "dram")
    roofline = Roofline.fit(kernels, latency, target.dtype_bytes)
    term, term_models = _in_model(target, lat_model, roofline, end_to_end) if end_to_end else (None, [])
    index = {"format": "hwopt-estimator/1", "target": target.name, "parallelism": target.parallelism,
             "dtype_bytes": target.dtype_bytes, "latency": "latency",
             "dram": "dram" if dram_model is not None else None, "roofline": roofline.to_dict(),
             "in_model": term.to_dict() if term is not None else None,
             "ops": sorted({f"{k.kind}:{k.op}" for k in kernels})}
    atomic_write_text(output / INDEX, json.dumps(index, indent=1, sort_keys=True) + "\n")
    if target.path is not None and not (output / "target.toml").exists():
        shutil.copyfile(target.path, output / "target.toml")  # the folder is a usable target on its own
    backends = collections.Counter(m.backend for m in rows)
    card = {
        "target": target.name,
        "training": {
            "table": source, "rows": len(rows), "rows_ignored": len(measurements) - len(rows),
            "kinds": dict(collections.Counter(kinds)), "backends": dict(backends),
            "groups": {g.name: {"rows": g.rows, "params": g.params, "cv_rmse_log": _rounded(g.cv_rmse)}
                       for g in lat_model.groups.values()},
            "dram_groups": None if dram_model is None else {
                g.name: {"rows": g.rows, "params": g.params, "cv_rmse_log": _rounded(g.cv_rmse)}
                for g in dram_model.groups.values()},
            "seconds": round(time.perf_counter() - start, 1),
        },
        "roofline_fallback": roofline.to_dict(),
        "in_model": None if term is None else {**term.to_dict(), "fitted_on": term_models},
    }
    previous = output / "card.json"
    if previous.exists():  # keep the accuracy section the bench wrote, marked stale if the data changed
        try:
            old = json.loads(previous.read_text())
        except ValueError:
            old = {}
        if "notes" in old and old.get("training", {}).get("rows") == len(rows):
            card["notes"] = old["notes"]
        for key in ("accuracy", "charge_check", "decision_accuracy", "interval_coverage"):
            if key in old:
                card[key] = old[key]
                if old.get("training", {}).get("rows") != len(rows):
                    card[key]["stale"] = "retrained on other data since these figures: rerun the bench"
    write_card(output, card)
    return card
