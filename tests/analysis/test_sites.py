"""Finding IBN blocks, depthwise convs and channel groups, with typeable stable ids."""

from __future__ import annotations

import pytest

from hwopt.canonical.canonicalize import load_canonical
from hwopt.analysis.sites import Analysis


@pytest.fixture(scope="module")
def mobilenetv2(example_path) -> Analysis:
    return Analysis(load_canonical(example_path("mobilenetv2"))[1])


def test_mobilenetv2_has_17_blocks_first_without_expand(mobilenetv2: Analysis) -> None:
    blocks = mobilenetv2.blocks
    assert [b.id for b in blocks] == [f"ibn{i}" for i in range(17)]
    assert blocks[0].expand is None and not blocks[0].fusable
    assert all(b.fusable for b in blocks[1:])
    assert [b.hidden_channels for b in blocks[:4]] == [32, 96, 144, 144]
    assert sum(b.residual is not None for b in blocks) == 10
    assert blocks[1].describe() == "16->96->24, k3 s2"
    assert {b.expand_acts[0].kind for b in blocks[1:]} == {"relu6"}


def test_depthwise_sites_point_at_their_block(mobilenetv2: Analysis) -> None:
    assert len(mobilenetv2.depthwise) == 17
    assert mobilenetv2.depthwise[3].block == "ibn3"


def test_channel_groups_residuals_and_fixed_outputs(mobilenetv2: Analysis) -> None:
    groups = {g.id: g for g in mobilenetv2.groups}
    assert all(site_id.startswith("ch") for site_id in groups)
    # Stage 3 (32 ch): three project convs tied by two residual Adds make one group.
    tied = [g for g in groups.values() if g.channels == 32 and len(g.producers) == 3]
    assert len(tied) == 1 and not tied[0].blockers
    # The classifier's input group is consumed by the Gemm through Flatten; resizable.
    last = mobilenetv2.groups[-1]
    assert last.channels == 1280 and last.consumers[0].node.op == "Gemm" and last.resizable


@pytest.mark.parametrize("name, blocks, fusable, dws", [
    ("efficientnet_lite0", 16, 15, 16),
    ("mobilenetv3_small", 11, 10, 11),
    ("resnet18", 0, 0, 0),
    ("ssdlite_mobilenetv2", 33, 19, 33),
    ("segmentation", 13, 12, 13),
])
def test_sites_on_every_example(example_path, name: str, blocks: int, fusable: int, dws: int) -> None:
    analysis = Analysis(load_canonical(example_path(name))[1])
    assert len(analysis.blocks) == blocks
    assert sum(b.fusable for b in analysis.blocks) == fusable
    assert len(analysis.depthwise) == dws
    assert analysis.groups


def test_mobilenetv3_blocks_see_squeeze_excite_and_hardswish(example_path) -> None:
    analysis = Analysis(load_canonical(example_path("mobilenetv3_small"))[1])
    with_se = [b for b in analysis.blocks if b.se is not None]
    assert len(with_se) == 9
    kinds = {a.kind for b in analysis.blocks for a in b.depthwise_acts}
    assert {"relu", "hardswish"} <= kinds


def test_ids_survive_rewrites(example_path) -> None:
    """Ids are anchored to node names: after fusing ibn1, ibn2 and dw5 keep their ids."""
    from hwopt.rewrites.apply import apply_steps
    from hwopt.calibration.samples import random_inputs
    from hwopt.rewrites.ruleset import parse_rule_option

    original, canonical, _ = load_canonical(example_path("mobilenetv2"))
    ids = Analysis(canonical).site_ids
    result = apply_steps(original, canonical, [parse_rule_option("fuse-ibn:init=linear@ibn1")],
                         random_inputs(original, 2, 0), random_inputs(original, 2, 1))
    after = Analysis(result.model, ids)
    assert "ibn1" not in after.sites and "dw1" not in after.sites
    assert after.sites["ibn2"].target.depthwise.name == Analysis(canonical).sites["ibn2"].target.depthwise.name
    assert "dw5" in after.sites
