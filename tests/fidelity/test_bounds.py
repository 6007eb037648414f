"""The statistics of a fidelity budget: Clopper-Pearson and bootstrap lower bounds over independent units,
how many units prove a budget, and the metric a classifier is judged by.

Known values: with n successes of n, the one-sided 95% Clopper-Pearson bound is 0.05 ** (1/n); in general it
is the lower end of scipy's two-sided 90% exact interval (binomtest). A real PP-OCR export (its 2-class
direction classifier, in tests/data) is run with onnxruntime for the metric choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from hwopt.calibration.samples import split_samples
from hwopt.fidelity.bounds import (MIN_BOOTSTRAP_UNITS, agreement_bound, best_provable, clopper_pearson_lower,
                                   mean_bound, unprovable_line, units_needed)
from hwopt.fidelity.metrics import METRICS, FidelityBudget, choose_metric, measure, metric_reason

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("successes,n", [(64, 64), (95, 100), (299, 300), (1, 3), (50, 60)])
def test_clopper_pearson_known_values(successes, n):
    expected = binomtest(successes, n).proportion_ci(confidence_level=0.90, method="exact").low
    assert clopper_pearson_lower(successes, n) == pytest.approx(expected, abs=1e-9)


def test_perfect_scores_and_units_needed():
    assert clopper_pearson_lower(64, 64) == pytest.approx(0.05 ** (1 / 64)) == pytest.approx(0.9543, abs=1e-4)
    assert clopper_pearson_lower(0, 10) == 0.0 and clopper_pearson_lower(0, 0) == 0.0
    assert units_needed(0.99, "clopper-pearson") == 299  # the figure: ~300 with no miss
    assert units_needed(0.95, "clopper-pearson") == 59
    assert best_provable(298, "clopper-pearson") < 0.99 <= best_provable(299, "clopper-pearson")
    assert units_needed(0.999, "bootstrap") == MIN_BOOTSTRAP_UNITS
    line = unprovable_line("top-1 agreement", 0.99, 64, "clopper-pearson", "each held-out sample")
    assert "95.4%" in line and "299" in line and "exact" in line and line.count("\n") == 0
    assert unprovable_line("top-1 agreement", 0.95, 64, "clopper-pearson", "x") is None


def test_crops_of_one_photo_count_once():
    # 3 photos of 4 crops each, one crop of the second photo missed: 2 successes of 3 units, not 11 of 12.
    per_sample = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1], float)
    groups = np.repeat(["a", "b", "c"], 4)
    grouped = agreement_bound(per_sample, groups)
    assert (grouped.units, grouped.successes) == (3, 2)
    assert grouped.lower == pytest.approx(clopper_pearson_lower(2, 3))
    flat = agreement_bound(per_sample, None)
    assert (flat.units, flat.successes) == (12, 11) and flat.lower > grouped.lower


def test_bootstrap_bound_needs_units_and_stays_below_the_mean():
    rng = np.random.default_rng(0)
    scores = 1 - rng.exponential(0.002, 200)
    bound = mean_bound(scores, None)
    assert bound.method == "bootstrap" and bound.units == 200
    assert scores.mean() - 4 * scores.std() / np.sqrt(200) < bound.lower < scores.mean()
    assert mean_bound(scores[:MIN_BOOTSTRAP_UNITS - 1], None).lower == 0.0  # too few units prove nothing
    assert mean_bound(scores, np.arange(200) // 20).units == 10  # 20 samples per source: 10 units


def test_budget_admits_an_inexact_model_on_its_bound():
    ref = np.eye(10)[np.arange(300) % 10] + 0.01
    cand = ref.copy()
    cand[0] = cand[0][::-1]  # one miss of 300
    fid = measure({"y": ref}, {"y": cand}, METRICS["top1"])
    assert fid.value == pytest.approx(299 / 300) and fid.bound.successes == 299
    assert fid.bound.lower == pytest.approx(clopper_pearson_lower(299, 300))
    budget = FidelityBudget(METRICS["top1"], 0.98)
    assert budget.misses(fid) is None  # 98.4% lower bound
    assert "lower bound" in FidelityBudget(METRICS["top1"], 0.99).misses(fid)  # 99.7% measured is not enough
    assert FidelityBudget(METRICS["top1"], 0.99).misses(fid, exact=True) is None


def test_two_class_classifier_is_judged_by_top1():
    """PP-OCR's text direction classifier (2 classes, a real Paddle export): top-1 agreement, and why."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(DATA / "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 192)).astype(np.float32)  # the model's text lines
    names = [o.name for o in session.get_outputs()]
    shapes = dict(zip(names, (v.shape for v in session.run(names, {session.get_inputs()[0].name: x}))))
    assert list(shapes.values())[0][1:] == (2,)
    assert choose_metric(shapes).name == "top1"
    assert "classifier" in metric_reason(shapes) and "top-1" in metric_reason(shapes)
    assert choose_metric({"score": (4, 1)}).name == "cosine"  # one score is not a choice of class
    assert choose_metric({"map": (1, 2, 8, 8)}).name == "argmax"
    with pytest.raises(Exception, match="C >= 6"):
        choose_metric(shapes, "top5")


def test_split_counts_independent_units():
    data = {"x": np.arange(40, dtype=np.float32).reshape(40, 1)}
    groups = np.repeat(np.array(["a", "b", "c", "d", "e"]), 8)
    split = split_samples(data, 0.25, groups=groups, seed=1)
    assert split.units == 2 and split.info["independent"] == 2 and split.info["independence_warning"] is None
    plain = split_samples(data, 10)
    assert plain.units == 10 and "inflated" in plain.info["independence_warning"]
