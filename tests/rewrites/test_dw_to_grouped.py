"""dw-to-grouped: exact on real exports, the kernels it writes, and why npu32 runs them faster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hwopt.rewrites.apply import apply_steps
from hwopt.calibration.samples import random_inputs
from hwopt.canonical.canonicalize import load_canonical
from hwopt.analysis.kernels import schedule
from hwopt.analysis.kernel import Kernel
from hwopt.rewrites import RULES
from hwopt.rewrites.dw_to_grouped import group_width, grouped_weights
from hwopt.rewrites.ruleset import parse_rule_option
from hwopt.analysis.sites import Analysis
from hwopt.targets import load_target

DATA = Path(__file__).parent.parent / "data"
EXPORT = DATA / "torch_dynamo_efficientnet_b0_w025.onnx"


@pytest.mark.parametrize("channels, wanted, width", [(96, 16, 16), (144, 32, 24), (240, 32, 30), (1152, 32, 32),
                                                      (32, 64, 32), (13, 8, 1)])
def test_group_width_is_the_largest_divisor_up_to_the_request(channels: int, wanted: int, width: int) -> None:
    assert group_width(channels, wanted) == width


def test_grouped_weights_compute_the_depthwise_conv() -> None:
    """A grouped conv with the block-diagonal weights equals the depthwise conv, multiplier 2 included."""
    rng = np.random.default_rng(0)
    channels, multiplier, width = 12, 2, 4
    dw = rng.normal(size=(channels * multiplier, 1, 3, 3)).astype(np.float32)
    grouped = grouped_weights(dw, channels, width)
    assert grouped.shape == (channels * multiplier, width, 3, 3)
    x = rng.normal(size=(1, channels, 9, 9)).astype(np.float32)

    def conv(weight: np.ndarray, group: int) -> np.ndarray:
        node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], group=group, pads=[1, 1, 1, 1])
        graph = onnx.helper.make_graph(
            [node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            [onnx.numpy_helper.from_array(weight, "w")])
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    np.testing.assert_allclose(conv(grouped, channels // width), conv(dw, channels), rtol=1e-5, atol=1e-5)


def test_on_a_real_export_every_depthwise_conv_is_grouped_exactly() -> None:
    """A torch (dynamo) EfficientNet-B0 export: every depthwise conv grouped by 8, outputs equal in onnxruntime,
    and the schedule now holds grouped convs of 8 channels per group where depthwise ones were."""
    original, canonical, _ = load_canonical(EXPORT)
    analysis = Analysis(canonical)
    rule = RULES["dw-to-grouped"]
    step = parse_rule_option("dw-to-grouped:channels=8")
    sites = [s for s in rule.find_sites(analysis) if rule.check(s, step.params, analysis) is None]
    assert sites
    result = apply_steps(original, canonical, [step], random_inputs(original, 4, 0), random_inputs(original, 2, 1))
    assert result.exact and len(result.steps[0].applied) == len(sites)
    fusion = load_target("npu32").fusion
    before = {k.nodes[0]: k.kernel for k in schedule(canonical, fusion).kernels if k.kernel.kind == "dwconv"}
    after = {k.nodes[0]: k.kernel for k in schedule(result.model, fusion).kernels if k.nodes[0] in before}
    assert after.keys() == before.keys()
    for name, old in before.items():
        new = after[name]
        width = group_width(old.cin, 8)
        assert new.kind == ("gconv" if 1 < width < old.cin else "conv" if width == old.cin else "dwconv")
        if new.kind == "gconv":
            assert new.groups == old.cin // width and (new.cin, new.cout) == (old.cin, old.cout)


@pytest.mark.slow  # SCALE-Sim emulation (8 s of CPU)
def test_npu32_emulator_runs_the_grouped_conv_faster(tmp_path) -> None:
    """Why the rule exists: on the 32x32 array (SCALE-Sim, array-only class), EfficientNet-Lite0's second
    depthwise conv (96 channels, 3x3, stride 2, 112 -> 56) grouped by 32 takes 56% of the cycles (321 -> 180 us),
    both charged pipelined (prefetch once); with a depthwise engine (npu32-dw) grouping is slower
    (tests/backends/test_scalesim_backend.py)."""
    from hwopt.backends.scalesim import ScaleSimBackend
    from hwopt.backends.scalesim_env import ensure_env

    ensure_env()
    backend = ScaleSimBackend(load_target("npu32"), cache_dir=tmp_path)
    dw = Kernel("dwconv", 96, 96, 112, 112, 56, 56, 3, 3, 2, groups=96, act="relu6")
    grouped = Kernel("gconv", 96, 96, 112, 112, 56, 56, 3, 3, 2, groups=3, act="relu6")
    t_dw, t_grouped = (m.latency_us for m in backend.measure([dw, grouped]))
    assert t_grouped < 0.6 * t_dw, (t_dw, t_grouped)


def test_the_search_offers_each_distinct_group_width_and_drops_them_without_grouped_data(example_path) -> None:
    """The default rule set searches dw-to-grouped at P/4, P/2, P channels per group (distinct widths only);
    a cost model without grouped-conv measurements (the cpu estimator) takes them out, with a note."""
    from hwopt.search.config import default_rules_path, load_search_file
    from hwopt.search.cost import make_cost_model
    from hwopt.search.space import build_space, grouped_width

    _, canonical, _ = load_canonical(example_path("mobilenetv2"))
    analysis = Analysis(canonical)
    space = build_space(analysis, load_search_file(default_rules_path()), 32)
    for var in space.variables:
        if var.dw is None:
            continue
        widths = [grouped_width(o.value) for o in var.options if grouped_width(o.value) is not None]
        channels = var.dw.attrs.in_channels
        assert widths == sorted({group_width(channels, w) for w in (8, 16, 32)} - {channels, 1}), var.id
    assert make_cost_model("auto", load_target("npu32")).scores_kind("gconv")
    cpu = make_cost_model("auto", load_target("cpu"))
    assert not cpu.scores_kind("gconv")
    space.drop_rule("dw-to-grouped", "no grouped-conv measurements")
    assert not any(o.choice and o.choice.rule == "dw-to-grouped" for v in space.variables for o in v.options)
    assert any(note.startswith("dw-to-grouped: not searched") for note in space.notes)
