"""cpu estimator truth: the paired A/B timing protocol (real onnxruntime sessions), the signed in-model term, and
the shipped cpu estimator's band and out-of-distribution flags on a real export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwopt.backends.ort_cpu import TimingSettings
from hwopt.backends.ort_paired import median_interval, paired_change
from hwopt.canonical.canonicalize import load_canonical
from hwopt.estimator import load_estimator
from hwopt.estimator.in_model import fit_signed_term, spans_sizes
from hwopt.targets import load_target
from tests.tinymodel import tiny_model

DATA = Path(__file__).parent.parent / "data"


def test_paired_protocol_tells_a_change_from_none() -> None:
    settings = TimingSettings.from_target(load_target("cpu"))
    small, large = tiny_model(channels=8, size=8), tiny_model(channels=32, size=32)
    same = paired_change(small, small, settings, rounds=6, runs=5)
    assert abs(same.ratio - 1) < 0.1 and same.low <= same.ratio <= same.high
    change = paired_change(small, large, settings, rounds=6, runs=5)
    assert change.ratio > 1.5 and change.resolved and change.low > 1  # 16x the MACs: slower, and it says so
    assert change.change_us == pytest.approx((change.ratio - 1) * change.base_us)


def test_median_interval_holds_the_median() -> None:
    ratios = np.exp(np.random.default_rng(0).normal(0.02, 0.01, 40))
    low, high = median_interval(ratios)
    assert low < float(np.median(ratios)) < high and low > 1.0  # a 2% change with 1% noise is resolved
    assert median_interval(ratios) == (low, high)  # seeded


def test_signed_in_model_term_recovers_a_per_node_saving() -> None:
    """Small models whose nodes cost ~1 us less inside the model than alone: the fit finds scale, saving and the
    per-conversion cost, and the floor keeps every kernel's in-model time positive."""
    rng = np.random.default_rng(1)
    sizes_n = ((1.5, 60), (3.0, 80), (20.0, 65), (60.0, 70), (8.0, 90), (2.0, 70), (30.0, 60), (5.0, 75))
    lists = [rng.uniform(lo, 4 * lo, n) for lo, n in sizes_n]
    conversions = np.array([8, 30, 2, 1, 34, 12, 0, 5])
    sizes = np.array([1e4, 4e4, 2e5, 1e5, 3e5, 2e4, 0.0, 5e4])
    truth = [0.7 * k - 0.9 for k in lists]
    measured = [float(np.maximum(t, 0.25 * 0.7 * k).sum()) + 0.3 * c + 0.05 * b * 1e-3
                for t, k, c, b in zip(truth, lists, conversions, sizes)]
    assert spans_sizes(lists)
    term = fit_signed_term(lists, measured, conversions, sizes, per_byte_ns=0.05)
    assert term.scale == pytest.approx(0.7, rel=0.02) and term.per_kernel_us == pytest.approx(-0.9, abs=0.05)
    assert term.reorder_us == pytest.approx(0.3, abs=0.1) and term.median_abs_error_pct < 0.5
    assert np.all(term.kernels_us(np.array([0.1, 1.0, 50.0])) > 0)


def test_cpu_estimate_has_a_band_and_flags_an_op_it_never_measured() -> None:
    est = load_estimator("cpu")
    result = est.estimate(load_canonical(DATA / "torch_unet_db_head_convtranspose.onnx")[1])
    assert result.low_us < result.latency_us < result.high_us
    transposed = [k for k in result.per_kernel if "ConvTranspose" in k.description]
    assert transposed and all(k.ood and "op ConvTranspose" in k.outside for k in transposed)
    assert all(k.high_us / k.latency_us >= 2.9 for k in transposed)  # a guess's band, not a measurement's
