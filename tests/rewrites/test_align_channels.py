"""align-channels: pad (exact, zero channels) or trim (refit) a channel group to a multiple of P."""

from __future__ import annotations

import numpy as np
import pytest

from hwopt.errors import HwoptError
from tests.rewrites.rule_case import apply_on_tiny, convs, run


def test_pad_adds_zero_channels_and_computes_the_same(tmp_path) -> None:
    original, result = apply_on_tiny(tmp_path, "align-channels:p=24,mode=pad@ch:expand")
    assert result.exact and result.final.exact
    shapes = {name: shape for name, shape, _ in convs(result.model)}
    assert shapes["expand"][0] == 24  # 16 -> 24 hidden channels, the depthwise conv and project follow
    x = np.random.default_rng(2).standard_normal((1, 8, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(result.model, x), run(original, x), rtol=1e-4, atol=1e-5)


def test_trim_keeps_a_multiple_of_p_and_is_inexact(tmp_path) -> None:
    _, result = apply_on_tiny(tmp_path, "align-channels:p=12,mode=trim@ch:expand")
    assert not result.exact
    assert {name: shape for name, shape, _ in convs(result.model)}["expand"][0] == 12
    assert 0 < result.final.worst_rel_l2 < 1.0


@pytest.mark.parametrize("rule, reason", [
    ("align-channels:p=24@ch:head", "its channel count is fixed by graph output 'y'"),
    ("align-channels:p=8@ch:expand", "16 channels are already a multiple of 8"),
    ("align-channels:p=32,mode=trim@ch:expand", "16 channels are fewer than p=32: nothing to keep"),
])
def test_refusals_say_why(tmp_path, rule: str, reason: str) -> None:
    with pytest.raises(HwoptError, match=f"align-channels cannot apply at ch:\\w+: {reason}"):
        apply_on_tiny(tmp_path, rule)
