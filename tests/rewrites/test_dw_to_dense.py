"""dw-to-dense: a depthwise conv becomes a standard conv with block-diagonal weights, exactly."""

from __future__ import annotations

import numpy as np

from tests.rewrites.rule_case import apply_on_tiny, convs, run


def test_the_depthwise_conv_becomes_dense_and_computes_the_same(tmp_path) -> None:
    original, result = apply_on_tiny(tmp_path, "dw-to-dense@dw0")
    assert result.exact and result.final.exact
    dense = {name: (shape, group) for name, shape, group in convs(result.model)}["dw"]
    assert dense == ((16, 16, 3, 3), 1)
    x = np.random.default_rng(3).standard_normal((1, 8, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(result.model, x), run(original, x), rtol=1e-4, atol=1e-5)
