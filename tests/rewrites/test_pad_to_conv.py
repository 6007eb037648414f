"""pad-to-conv: exact, the reasons a Pad is refused, why Ethos-U55 runs it faster, and optimize keeping each
lowering only where Vela says it pays."""

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

from hwopt.calibration.samples import random_inputs
from hwopt.canonical.canonicalize import load_canonical
from hwopt.rewrites import RULES
from hwopt.rewrites.apply import apply_steps
from hwopt.rewrites.ruleset import RuleStep

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(5)


def _blaze_net(path: Path, size: int = 16, channels: int = 8, extra: int = 8, prelu: bool = False,
               refused: bool = True) -> Path:
    """A BlazeBlock-like residual: the shortcut widened by a channel zero-pad (as MediaPipe's detectors do),
    added to a conv that widens; then (``refused``) three Pads the rule must refuse: spatial, reflect, and a
    fill of 1 (the TFLite writer takes constant pads only, so the Vela cases leave them out)."""
    wide = channels + extra
    w1 = RNG.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = RNG.standard_normal((wide, channels, 1, 1)).astype(np.float32) * 0.3
    act = "PRelu" if prelu else "Relu"
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node(act, ["c1", "slope"] if prelu else ["c1"], ["r1"], "act1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2"),
             helper.make_node("Pad", ["r1", "channel_pads"], ["padded"], "channel_pad"),
             helper.make_node("Add", ["c2", "padded"], ["sum" if refused else "y"], "add")]
    if refused:
        nodes += [helper.make_node("Pad", ["sum", "spatial_pads"], ["s1"], "spatial_pad"),
                  helper.make_node("Pad", ["s1", "channel_pads"], ["s2"], "reflect_pad", mode="reflect"),
                  helper.make_node("Pad", ["s2", "channel_pads", "one"], ["y"], "ones_pad")]
    inits = [("w1", w1), ("w2", w2), ("channel_pads", np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64)),
             ("spatial_pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), ("one", np.array(1.0, np.float32))]
    if prelu:
        inits.append(("slope", RNG.uniform(0.05, 0.9, (channels, 1, 1)).astype(np.float32)))
    out_shape = [1, wide + 2 * extra, size + 2, size + 2] if refused else [1, wide, size, size]
    graph = helper.make_graph(nodes, "blaze", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, n) for n, v in inits])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _rewrite(path: Path, sites: list[str] | None = None):
    original, canonical, _ = load_canonical(path)
    step = RuleStep("pad-to-conv", RULES["pad-to-conv"].parse_params({}), sites or [])
    return canonical, apply_steps(original, canonical, [step], random_inputs(original, 4, 0),
                                  random_inputs(original, 4, 1))


def test_a_channel_zero_pad_becomes_an_exact_identity_conv_and_other_pads_say_why_not(tmp_path: Path) -> None:
    canonical, result = _rewrite(_blaze_net(tmp_path / "blaze.onnx"))
    (step,) = result.steps
    assert [o.site for o in step.applied] == ["pad0"]
    assert step.applied[0].detail == "8 -> 16 ch (0 zero channel(s) before, 8 after)"
    assert dict(step.skipped) == {"pad1": "it pads other axes than the channels",
                                  "pad2": "its mode is 'reflect', not constant",
                                  "pad3": "it pads with a value other than 0"}
    assert result.exact
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("Pad") == 3 and ops.count("Conv") == 3
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32) * 3
    before = ort.InferenceSession(canonical.SerializeToString()).run(None, {"x": x})[0]
    after = ort.InferenceSession(result.model.SerializeToString()).run(None, {"x": x})[0]
    # Every padded value is one input times 1.0 plus zeros; what differs by an ulp is onnxruntime fusing
    # the Add into the conv before it in one graph and not in the other.
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_inspect_lists_pad_and_prelu_sites_with_their_rules(tmp_path: Path) -> None:
    model = _blaze_net(tmp_path / "blaze.onnx", prelu=True)
    done = subprocess.run([sys.executable, "-m", "hwopt.cli", "inspect", str(model), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    sites = {s["id"]: s for s in json.loads(done.stdout)["sites"]}
    assert sites["pad0"]["where"] == "channel_pad" and sites["pad0"]["rules"] == ["pad-to-conv"]
    assert sites["pr0"]["where"] == "act1" and sites["pr0"]["rules"] == ["prelu-to-dwconv"]


def test_on_ethos_u55_the_zeros_stop_streaming_from_flash(tmp_path: Path) -> None:
    """Vela lowers a channel PAD to a memory copy that writes the zeros from a constant, read per element from
    flash on ethos-u55 (Shared_Sram); the identity conv's weights are read once. Measured by Vela, both ways."""
    pytest.importorskip("ethosu.vela")
    from hwopt.backends.vela import measure_model
    from hwopt.targets import load_target

    canonical, result = _rewrite(_blaze_net(tmp_path / "blaze.onnx", size=64, channels=24, extra=24,
                                              refused=False))
    target = load_target("ethos-u55-256")
    before, after = measure_model(canonical, target), measure_model(result.model, target)
    assert after.latency_us < 0.9 * before.latency_us, (before.latency_us, after.latency_us)
    assert after.meta["offchip_traffic_bytes"] < before.meta["offchip_traffic_bytes"]


@pytest.mark.slow  # one optimize run with three whole-model Vela compiles
def test_optimize_judges_each_lowering_on_top_of_the_ones_kept(tmp_path: Path) -> None:
    pytest.importorskip("ethosu.vela")
    from hwopt.backends.vela import measure_model
    from hwopt.targets import load_target

    model = _blaze_net(tmp_path / "blaze.onnx", size=48, channels=24, extra=24, prelu=True, refused=False)
    out = tmp_path / "out.onnx"
    done = subprocess.run([sys.executable, "-m", "hwopt.cli", "optimize", str(model), "-t", "ethos-u55-256",
                           "-o", str(out), "--json", "--eval-samples", "4", "--exact-only"], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=600)
    assert done.returncode == 0, done.stderr
    lowering = json.loads(done.stdout)["gain"]["lowering"]
    tried = {t["rule"]: t for t in lowering["tried"]}
    assert list(tried) == ["prelu-to-dwconv", "pad-to-conv"]
    # The second is measured on top of the first when the first was kept, else on the original.
    first, second = tried["prelu-to-dwconv"], tried["pad-to-conv"]
    assert second["before_us"] == pytest.approx(first["after_us"] if first["taken"] else first["before_us"])
    assert lowering["before_us"] == pytest.approx(first["before_us"])
    kept = [t for t in lowering["tried"] if t["taken"]]
    assert kept and all(t["change"] <= -0.01 for t in kept)
    target = load_target("ethos-u55-256")
    written, original = measure_model(out, target).latency_us, measure_model(model, target).latency_us
    assert written == pytest.approx(lowering["after_us"], rel=1e-6)
    assert written == pytest.approx(original * (1 + lowering["change"]), rel=1e-6)
