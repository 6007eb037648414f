"""depth-multiplier: a block's hidden width scaled to a multiple of P, the block refit; refusal reasons."""

from __future__ import annotations

import pytest

from hwopt.errors import HwoptError
from tests.rewrites.rule_case import apply_on_tiny, convs


def test_half_the_hidden_width_is_inexact_and_refit(tmp_path) -> None:
    _, result = apply_on_tiny(tmp_path, "depth-multiplier:ratio=0.5,p=4@ibn0")
    assert not result.exact
    shapes = {name: shape for name, shape, _ in convs(result.model)}
    assert shapes["expand"][0] == 8 and shapes["project"][1] == 8  # 16 -> 8 hidden channels
    assert 0 < result.final.worst_rel_l2 < 1.0


def test_a_ratio_that_changes_nothing_is_refused_with_the_reason(tmp_path) -> None:
    with pytest.raises(HwoptError, match="depth-multiplier cannot apply at ibn0: width 16 stays the same at "
                                         "ratio 1.1 with p=8"):
        apply_on_tiny(tmp_path, "depth-multiplier:ratio=1.1,p=8@ibn0")
