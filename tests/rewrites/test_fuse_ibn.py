"""fuse-ibn: expand 1x1 + depthwise KxK become one KxK conv, refit by least squares; refusal reasons."""

from __future__ import annotations

import numpy as np
import pytest

from hwopt.errors import HwoptError
from tests.rewrites.rule_case import apply_on_tiny, convs, run


def test_the_block_becomes_one_kxk_conv_and_the_refit_beats_the_linear_init(tmp_path) -> None:
    original, fitted = apply_on_tiny(tmp_path, "fuse-ibn@ibn0")
    _, linear = apply_on_tiny(tmp_path, "fuse-ibn:init=linear@ibn0")
    assert not fitted.exact and not linear.exact
    shapes = [shape for _, shape, _ in convs(fitted.model)]
    # expand (16x8x1x1) and depthwise (16x1x3x3) are replaced by one 16x8x3x3 conv; project and head stay.
    assert len(shapes) == 3 and (16, 8, 3, 3) in shapes
    assert all(group == 1 for _, _, group in convs(fitted.model))
    x = np.random.default_rng(5).standard_normal((1, 8, 8, 8)).astype(np.float32)
    error = lambda m: float(np.linalg.norm(run(m, x) - run(original, x)) / np.linalg.norm(run(original, x)))  # noqa: E731
    # The least-squares refit approximates the block (a ReLU sits between the two convs it replaces) far
    # better than the linear composition of the two convs' weights.
    assert error(fitted.model) < 0.5 * error(linear.model)
    assert fitted.final.worst_rel_l2 == pytest.approx(error(fitted.model), rel=0.5)


def test_a_block_without_an_expand_conv_is_refused_with_the_reason(example_path) -> None:
    from hwopt.calibration.samples import random_inputs
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.rewrites.apply import apply_steps
    from hwopt.rewrites.ruleset import parse_rule_option

    original, canonical, _ = load_canonical(example_path("mobilenetv2"))
    with pytest.raises(HwoptError, match="fuse-ibn cannot apply at ibn0: the block has no expand conv"):
        apply_steps(original, canonical, [parse_rule_option("fuse-ibn@ibn0")], random_inputs(original, 2, 0),
                    random_inputs(original, 2, 1))
