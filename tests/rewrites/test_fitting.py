"""The least-squares fitter on a real block: MobileNetV2's ibn1 (16 -> 96 -> 24, stride 2), onnxruntime data."""

from __future__ import annotations

import numpy as np
import pytest

from hwopt.calibration.samples import OrtRunner, random_inputs
from hwopt.canonical.canonicalize import load_canonical
from hwopt.rewrites.fitting import ConvLeastSquares, joint_iterations, linear_fusion_init
from hwopt.analysis.graph import conv_bias, conv_weight
from hwopt.analysis.sites import Analysis

RELU6 = (0.0, 6.0)


@pytest.fixture(scope="module")
def block_rows(example_path):
    """Fitters holding ibn1's rows (block input patches, depthwise pre-activation, block output) for
    8 calibration and 4 held-out samples, and the linear-composition init."""
    original, canonical, _ = load_canonical(example_path("mobilenetv2"))
    block = next(s.target for s in Analysis(canonical).of_kind("ibn") if s.id == "ibn1")
    attrs = block.dw_attrs
    names = [block.input.name, block.depthwise.outputs[0].name, block.output.name]
    runner = OrtRunner(canonical, names, only_extra=True)
    fitters = []
    for count, seed in ((8, 0), (4, 1)):
        fitter = ConvLeastSquares(block.in_channels, block.hidden_channels, attrs.kernel, attrs.strides, attrs.pads,
                                  attrs.dilations, seed=seed, samples=count)
        for _, t in runner.iter_batches(random_inputs(original, count, seed)):
            fitter.update(t[names[0]], t[names[1]], aux=t[names[2]])
        fitters.append(fitter)
    init = linear_fusion_init(conv_weight(block.expand), conv_bias(block.expand),
                              conv_weight(block.depthwise), conv_bias(block.depthwise))
    return fitters[0], fitters[1], init


def _project_error(train: ConvLeastSquares, test: ConvLeastSquares, weight, bias, match_variance=False) -> float:
    """Held-out relative L2 error of the block output: clip(fused conv) -> project conv refit on ``train``."""
    theta = np.concatenate([weight.reshape(len(weight), -1).T, bias[None]])
    hidden = [np.clip(f.design @ theta, *RELU6) for f in (train, test)]
    project = ConvLeastSquares(hidden[0].shape[1], train.aux.shape[1], (1, 1))
    project.update_rows(hidden[0], train.aux)
    w, b = project.solve(np.zeros((train.aux.shape[1], hidden[0].shape[1], 1, 1), np.float32),
                         np.zeros(train.aux.shape[1], np.float32), match_variance=match_variance)
    pred = hidden[1] @ w[:, :, 0, 0].T + b
    return float(np.linalg.norm(pred - test.aux) / np.linalg.norm(test.aux))


@pytest.mark.slow  # the joint L-BFGS refit (12 s of CPU)
def test_joint_refinement_lowers_the_block_output_error(block_rows) -> None:
    train, test, (w0, b0) = block_rows
    assert joint_iterations(train.rows, train.features + 1, len(w0), train.aux.shape[1]) == 20
    weight, bias = train.solve(w0, b0, clip=RELU6)
    refined = train.refine_through_linear(weight, bias, RELU6)
    plain_error = _project_error(train, test, weight, bias)
    joint_error = _project_error(train, test, *refined)
    linear_error = _project_error(train, test, w0, b0)
    assert joint_error < 0.97 * plain_error < 0.97 * linear_error
    # Deterministic, and zero steps give the weights back untouched.
    again = train.refine_through_linear(weight, bias, RELU6)
    assert all(np.array_equal(a, b) for a, b in zip(refined, again))
    same = train.refine_through_linear(weight, bias, RELU6, iterations=0)
    assert same[0] is weight and same[1] is bias


def test_match_variance_restores_the_targets_spread(block_rows) -> None:
    train, _, (w0, b0) = block_rows
    weight, bias = train.solve(w0, b0, clip=RELU6)
    theta = np.concatenate([weight.reshape(len(weight), -1).T, bias[None]])
    hidden = np.clip(train.design @ theta, *RELU6)
    project = ConvLeastSquares(hidden.shape[1], train.aux.shape[1], (1, 1))
    project.update_rows(hidden, train.aux)
    outs = train.aux.shape[1]
    zeros = (np.zeros((outs, hidden.shape[1], 1, 1), np.float32), np.zeros(outs, np.float32))
    outputs = {}
    for match in (False, True):
        w, b = project.solve(*zeros, match_variance=match)
        outputs[match] = hidden @ w[:, :, 0, 0].T + b
    target_std = train.aux.std(axis=0)
    # Least squares shrinks the spread (by the unexplained part); matching puts it back, mean kept.
    assert np.all(outputs[False].std(axis=0) < 0.95 * target_std)
    np.testing.assert_allclose(outputs[True].std(axis=0), target_std, rtol=1e-3)
    np.testing.assert_allclose(outputs[True].mean(axis=0), outputs[False].mean(axis=0), atol=1e-3 * target_std.max())
    with pytest.raises(ValueError, match="unclipped"):
        project.solve(*zeros, clip=RELU6, match_variance=True)


def test_joint_refinement_is_skipped_when_rows_are_too_few_or_too_costly() -> None:
    # MobileNetV2's 14x14 blocks (64 -> 384 -> 64, 3x3) on 64 samples: 12544 rows for 246k parameters.
    assert joint_iterations(12544, 577, 384, 64) == 0
    # A 1441-feature, 960-hidden conv: one step would exceed the budget.
    assert joint_iterations(10**6, 1441, 960, 160) == 0
    assert joint_iterations(32768, 217, 144, 32) == 9
