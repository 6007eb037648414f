"""prelu-to-dwconv: exact, both forms, the reasons a site is refused, and why Ethos-U55 runs it faster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.analysis.sites import Analysis
from hwopt.calibration.samples import random_inputs
from hwopt.canonical.canonicalize import load_canonical
from hwopt.errors import HwoptError
from hwopt.rewrites import RULES
from hwopt.rewrites.apply import apply_steps
from hwopt.rewrites.ruleset import RuleStep
from hwopt.search.config import load_search_file

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(3)


def _prelu_net(path: Path, size: int = 16, channels: int = 16) -> Path:
    """conv -> PReLU (slopes in [0.05, 0.9]) -> conv -> PReLU (slopes up to 1.6 and below 0, as trained palm
    detectors have) -> global pool -> flatten -> gemm -> PReLU of one shared slope on the 2-D features."""
    w1 = RNG.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = RNG.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.1
    low = RNG.uniform(0.05, 0.9, (channels, 1, 1)).astype(np.float32)
    mixed = np.linspace(-0.4, 1.6, channels, dtype=np.float32).reshape(channels, 1, 1)
    fc = RNG.standard_normal((channels, 10)).astype(np.float32) * 0.2
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c1", "a1"], ["p1"], "prelu1"),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c2", "a2"], ["p2"], "prelu2"),
             helper.make_node("GlobalAveragePool", ["p2"], ["g"], "gap"),
             helper.make_node("Flatten", ["g"], ["f"], "flatten"),
             helper.make_node("MatMul", ["f", "fc"], ["m"], "fc"),
             helper.make_node("PRelu", ["m", "a3"], ["y"], "prelu3")]
    graph = helper.make_graph(nodes, "prelu_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(v, n) for n, v in
                               (("w1", w1), ("w2", w2), ("a1", low), ("a2", mixed), ("fc", fc),
                                ("a3", np.array([0.2], np.float32)))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _rewrite(path: Path):
    original, canonical, _ = load_canonical(path)
    step = RuleStep("prelu-to-dwconv", RULES["prelu-to-dwconv"].parse_params({}))
    return canonical, apply_steps(original, canonical, [step], random_inputs(original, 4, 0),
                                  random_inputs(original, 4, 1))


def test_both_forms_are_exact_and_a_2d_prelu_is_refused_with_its_reason(tmp_path: Path) -> None:
    model = _prelu_net(tmp_path / "prelu.onnx")
    canonical, result = _rewrite(model)
    analysis = Analysis(canonical)
    assert [s.id for s in analysis.of_kind("prelu")] == ["pr0", "pr1", "pr2"]
    (step,) = result.steps
    assert [o.site for o in step.applied] == ["pr0", "pr1"]
    assert "Max(x, a*x)" in step.applied[0].detail and "Relu(x) + a*Min(x, 0)" in step.applied[1].detail
    assert step.skipped == [("pr2", "its input is 2-D (a 1x1 depthwise conv needs NCHW)")]
    assert result.exact
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("PRelu") == 1 and ops.count("Max") == 1 and ops.count("Min") == 1
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in result.model.graph.node
              if n.op_type == "Conv"]
    assert sorted(groups) == [1, 1, 16, 16]
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32) * 3
    before = ort.InferenceSession(canonical.SerializeToString()).run(None, {"x": x})[0]
    after = ort.InferenceSession(result.model.SerializeToString()).run(None, {"x": x})[0]
    # One of the two terms is exactly 0 for every element: nothing rounds differently.
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_on_ethos_u55_the_slope_stops_streaming_from_flash(tmp_path: Path) -> None:
    """Vela lowers PRELU to a MUL by the slope broadcast from a constant, which ethos-u55 (Shared_Sram) reads
    from flash per element; as depthwise weights the slope is read once. Measured by Vela, both ways."""
    pytest.importorskip("ethosu.vela")
    from hwopt.backends.vela import measure_model
    from hwopt.targets import load_target

    model = _prelu_net(tmp_path / "prelu.onnx", size=48, channels=32)
    canonical, result = _rewrite(model)
    target = load_target("ethos-u55-256")
    before = measure_model(canonical, target)
    after = measure_model(result.model, target)
    assert after.latency_us < 0.8 * before.latency_us, (before.latency_us, after.latency_us)
    assert after.meta["offchip_traffic_bytes"] < before.meta["offchip_traffic_bytes"]


def test_lower_tables_take_only_lowering_rules(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[search.dw-to-dense]\nsites = ["dw*"]\n[lower.prelu-to-dwconv]\nsites = ["pr*"]\n')
    assert load_search_file(good).lowerings == {"prelu-to-dwconv": ["pr*"]}
    assert load_search_file(good).restricted_to_exact().lowerings == {"prelu-to-dwconv": ["pr*"]}
    bad = tmp_path / "bad.toml"
    bad.write_text("[lower.fuse-ibn]\n")
    with pytest.raises(HwoptError, match=r"\[lower.fuse-ibn\]: not a lowering rule .*prelu-to-dwconv"):
        load_search_file(bad)
    bad.write_text('[lower.prelu-to-dwconv]\nmodes = ["pad"]\n')
    with pytest.raises(HwoptError, match="unknown key 'modes'"):
        load_search_file(bad)


def test_optimize_keeps_the_lowering_only_where_vela_measures_it_faster(tmp_path: Path) -> None:
    """No estimator prices the lowering: optimize applies it on its pick and lets Vela decide, per target."""
    pytest.importorskip("ethosu.vela")
    from hwopt.backends.vela import measure_model
    from hwopt.targets import load_target

    model = _prelu_net(tmp_path / "prelu.onnx", size=48, channels=32)
    out = tmp_path / "out.onnx"
    done = subprocess.run([sys.executable, "-m", "hwopt.cli", "optimize", str(model), "-t", "ethos-u55-256",
                           "-o", str(out), "--json", "--eval-samples", "4", "--exact-only"], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=600)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    lowering = doc["gain"]["lowering"]
    assert lowering["taken"] and lowering["judge"] == "vela" and lowering["change"] < -0.2, lowering
    assert "prelu-to-dwconv@pr*" in doc["best"]["rules"]
    target = load_target("ethos-u55-256")
    written, original = measure_model(out, target).latency_us, measure_model(model, target).latency_us
    assert written == pytest.approx(lowering["after_us"], rel=1e-6)
    assert written < original * 0.8
