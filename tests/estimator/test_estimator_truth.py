"""Estimator truth: single-site decisions, the analytic prior, intervals and out-of-distribution flags
(real exports from tests/data, the shipped npu32 estimator and table, real XGBoost training)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hwopt.rewrites.apply import apply_steps
from hwopt.backends.table_file import read_table
from hwopt.calibration.samples import random_inputs
from hwopt.canonical.canonicalize import load_canonical
from hwopt.estimator import load_estimator
from hwopt.estimator.features import FEATURES, features
from hwopt.estimator.regressor import OFFSET_BASES, KernelRegressor
from hwopt.analysis.kernel import Kernel
from hwopt.search.config import default_rules_path, load_search_file
from hwopt.search.cost import EstimatorCost
from hwopt.search.decisions import decision_kernels, site_decisions
from hwopt.search.space import build_space
from hwopt.search.variants import VariantModel
from hwopt.analysis.sites import Analysis
from hwopt.targets import estimator_root, load_target

DATA = Path(__file__).parent.parent / "data"
REAL = DATA / "torch_dynamo_mobilenet_v3_small_w025.onnx"
NPU_TABLE = estimator_root() / "npu32" / "measurements.csv.gz"
ARRAY = ("conv", "dwconv", "gconv", "gemm")


@pytest.fixture(scope="module")
def npu32():
    return load_target("npu32")


@pytest.fixture(scope="module")
def real(npu32):
    original, canonical, _ = load_canonical(REAL)
    analysis = Analysis(canonical)
    space = build_space(analysis, load_search_file(default_rules_path()), npu32.parallelism)
    cost = EstimatorCost(npu32)
    vm = VariantModel(analysis, space, npu32.fusion, npu32.dtype_bytes, cost)
    return original, canonical, space, vm, cost


def test_site_decisions_cover_every_option_and_match_the_written_model(real, npu32):
    original, canonical, space, vm, cost = real
    found = site_decisions(space, vm)
    assert len(found) == sum(v.size - 1 for v in space.variables if not v.pinned)
    assert {d.rule for d in found} >= {"fuse-ibn", "dw-to-dense", "align-channels"}
    # An exact decision, materialised: the estimate of the written model moves by the decision's figure.
    dense = next(d for d in found if d.rule == "dw-to-dense")
    result = apply_steps(original, canonical, space.steps(dense.decisions), random_inputs(original, 4, 0),
                         random_inputs(original, 2, 1))
    est = cost.estimator
    change = est.estimate(result.model).latency_us - est.estimate(canonical).latency_us
    assert change == pytest.approx(dense.estimated_us, rel=1e-6, abs=1e-6)
    assert any(k.kind == "conv" for k in dense.after) and any(k.kind == "dwconv" for k in dense.before)
    # What profile --decisions measures: new kernels only, none the model already has.
    kernels = decision_kernels(canonical, npu32)
    assert kernels and not set(kernels) & set(vm.kernels(space.baseline))


def test_prior_follows_the_emulator_on_the_table(npu32):
    """The analytic prior alone (one constant) is within 30% of SCALE-Sim on 90% of the table's array kernels."""
    rows = [m for m in read_table(NPU_TABLE) if m.kernel.kind in ARRAY]
    x = features([m.kernel for m in rows], npu32.parallelism, npu32.dtype_bytes)
    residual = np.log([m.latency_us for m in rows]) - x[:, FEATURES.index("log_prior")]
    residual -= np.median(residual)
    assert np.mean(np.abs(residual) < np.log(1.3)) >= 0.9


def test_offset_base_extrapolates_to_larger_convs(npu32):
    """Trained on the smaller 80% of the table's convs, the larger ones within 15% for 80% of them."""
    rows = [m for m in read_table(NPU_TABLE) if m.kernel.kind == "conv"]
    x = features([m.kernel for m in rows], npu32.parallelism, npu32.dtype_bytes)
    y = np.array([m.latency_us for m in rows])
    size = x[:, OFFSET_BASES[0]]
    train = size <= np.quantile(size, 0.8)
    grid = {"max_depth": (4,), "learning_rate": (0.1,), "n_estimators": (100,), "min_child_weight": (1,)}
    model = KernelRegressor.fit(x[train], ["conv"] * int(train.sum()), y[train], grid=grid)
    assert model.groups["conv"].offset == OFFSET_BASES[0]
    error = np.abs(model.predict(x[~train], ["conv"] * int((~train).sum())) / y[~train] - 1)
    assert np.mean(error <= 0.15) >= 0.8
    # The out-of-distribution flag: the largest ones lie outside the training range.
    _, _, ood = model.interval_log(x[~train], ["conv"] * int((~train).sum()))
    assert ood.mean() > 0.5


def test_estimate_band_and_out_of_distribution_flag(npu32):
    est = load_estimator(npu32)
    result = est.estimate(load_canonical(REAL)[1])
    assert result.low_us < result.latency_us < result.high_us
    assert result.high_us / result.low_us < 1.5  # a band, not a shrug
    for k in result.per_kernel:
        if not k.free:
            assert k.low_us <= k.latency_us <= k.high_us
    doc = result.to_dict()["interval"]
    assert doc["low_us"] == result.low_us and len(doc["drivers"]) == 3
    # A conv far beyond the table (1024x1024 output) is flagged, named, and its band is wider.
    inside = Kernel("conv", 32, 32, 28, 28, 28, 28, 3, 3, 1, 1, "relu")
    outside = replace(inside, h=1024, w=1024, out_h=1024, out_w=1024)
    low, high, ood = est.interval([inside, outside])
    assert list(ood) == [False, True]
    assert "height" in est.outside(outside)
    predicted = est.predict([inside, outside])
    assert high[1] / predicted[1] > high[0] / predicted[0]


def test_optimize_measures_its_finalists_and_keeps_the_fastest_measured(tmp_path):
    """npu32 (deterministic emulation): every finalist within the budgets is timed; the kept one is the fastest
    measured, or the original when nothing is faster; each variant carries the estimate's band."""
    from hwopt.request import OptimizeRequest
    from hwopt.search.optimize import optimize

    result, model = optimize(REAL, OptimizeRequest(target="npu32", rules=default_rules_path().parent / "fuse-dense.toml",
                                                   exact_only=True, finalists=3, compare=False, measure_finalists=True))
    timed = [c for c in result.finalists if c.measured_us is not None]
    assert len(timed) >= 2 and model is not None
    assert result.best.measured_us <= min(c.measured_us for c in timed)
    assert all(c.band is not None and c.band["low_us"] <= c.figures["latency_us"] <= c.band["high_us"]
               for c in result.finalists)
