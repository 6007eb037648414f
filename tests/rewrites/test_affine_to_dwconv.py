"""affine-to-dwconv: exact, the reasons a Mul or Add is refused, and why Ethos-U55 runs it faster (Vela)."""

from __future__ import annotations

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

RNG = np.random.default_rng(11)


def _affine_net(path: Path, size: int = 16, channels: int = 8, refused: bool = True) -> Path:
    """A conv and a max pool, then a BatchNormalization left as Mul and Add by per-channel constants (it
    follows the pool, so nothing folds it), as tf2onnx writes Keras' unfused BatchNormalization; then
    (``refused``) a Mul by one scalar and an Add of a constant that varies over the map, which the rule
    must refuse."""
    half = size // 2
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], "relu"),
             helper.make_node("MaxPool", ["r"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Mul", ["p", "scale"], ["m"], "bn_mul"),
             helper.make_node("Add", ["shift", "m"], ["a" if refused else "y"], "bn_add")]
    if refused:
        nodes += [helper.make_node("Mul", ["a", "half"], ["s"], "scalar_mul"),
                  helper.make_node("Add", ["s", "bias_map"], ["y"], "map_add")]
    inits = [("w", RNG.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.3),
             ("scale", RNG.uniform(0.5, 1.5, (channels, 1, 1)).astype(np.float32)),
             ("shift", RNG.uniform(-0.2, 0.2, (1, channels, 1, 1)).astype(np.float32)),
             ("half", np.array(0.5, np.float32)),
             ("bias_map", RNG.standard_normal((1, 1, half, half)).astype(np.float32))]
    graph = helper.make_graph(nodes, "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, half, half])],
                              [numpy_helper.from_array(v, n) for n, v in inits])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _rewrite(path: Path):
    original, canonical, _ = load_canonical(path)
    step = RuleStep("affine-to-dwconv", RULES["affine-to-dwconv"].parse_params({}), [])
    return canonical, apply_steps(original, canonical, [step], random_inputs(original, 4, 0),
                                  random_inputs(original, 4, 1))


def test_a_per_channel_mul_and_add_become_exact_depthwise_convs_and_others_say_why_not(tmp_path: Path) -> None:
    canonical, result = _rewrite(_affine_net(tmp_path / "affine.onnx"))
    (step,) = result.steps
    # the Mul by the scale and the Add of the shift after it (an unfolded BatchNormalization): one conv
    assert [(o.site, o.detail) for o in step.applied] == [
        ("aff0", "8 ch: x * c + d as one 1x1 depthwise conv (with aff1)"),
        ("aff1", "8 ch: x * c + d as one 1x1 depthwise conv (with aff0)")]
    assert dict(step.skipped) == {
        "aff2": "its constant is one value for every channel (an NPU applies a scalar from a register)",
        "aff3": "its constant of shape [1, 1, 8, 8] is not one value per channel (C, 1, 1)"}
    assert result.exact
    convs = [n for n in result.model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and [n.op_type for n in result.model.graph.node].count("Mul") == 1
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32) * 3
    before = ort.InferenceSession(canonical.SerializeToString()).run(None, {"x": x})[0]
    after = ort.InferenceSession(result.model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)  # x * c + d: the same up to float rounding


def test_on_ethos_u55_the_constant_stops_being_read_per_element(tmp_path: Path) -> None:
    """Vela runs a MUL or ADD by a broadcast per-channel constant as an elementwise op reading that constant;
    on ethos-u55 (Shared_Sram) that is several times a 1x1 depthwise conv's cycles. Measured by Vela."""
    pytest.importorskip("ethosu.vela")
    from hwopt.backends.vela import measure_model
    from hwopt.targets import load_target

    canonical, result = _rewrite(_affine_net(tmp_path / "affine.onnx", size=96, channels=32, refused=False))
    target = load_target("ethos-u55-256")
    before, after = measure_model(canonical, target), measure_model(result.model, target)
    assert after.latency_us < 0.7 * before.latency_us, (before.latency_us, after.latency_us)


def _standalone_bn_net(path: Path, size: int = 16, channels: int = 8) -> Path:
    """conv -> ReLU -> a BatchNormalization op that cannot fold (after the ReLU: a captcha CNN through tf2onnx)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], "relu"),
             helper.make_node("BatchNormalization", ["r", "gamma", "beta", "mean", "var"], ["y"], "bn", epsilon=1e-3)]
    inits = [("w", RNG.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.3),
             ("gamma", RNG.uniform(0.5, 1.5, channels).astype(np.float32)),
             ("beta", RNG.uniform(-0.2, 0.2, channels).astype(np.float32)),
             ("mean", RNG.uniform(0.0, 0.5, channels).astype(np.float32)),
             ("var", RNG.uniform(0.5, 2.0, channels).astype(np.float32))]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size, size])],
                              [numpy_helper.from_array(v, n) for n, v in inits])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_a_standalone_batchnorm_becomes_one_depthwise_conv(tmp_path: Path) -> None:
    canonical, result = _rewrite(_standalone_bn_net(tmp_path / "bn.onnx"))
    (step,) = result.steps
    assert [(o.site, o.detail) for o in step.applied] == [("aff0", "8 ch: batch norm x * s + d as a 1x1 depthwise conv")]
    assert result.exact
    ops = [n.op_type for n in result.model.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 2
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32) * 3
    before = ort.InferenceSession(canonical.SerializeToString()).run(None, {"x": x})[0]
    after = ort.InferenceSession(result.model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)  # float rounding of the folded statistics


def test_on_ethos_u55_a_standalone_batchnorm_as_a_depthwise_conv_is_faster(tmp_path: Path) -> None:
    """The writer lowers the BatchNormalization to a MUL and an ADD by per-channel constants, each read per element
    from flash on ethos-u55; one 1x1 depthwise conv holds both. Measured by Vela."""
    pytest.importorskip("ethosu.vela")
    from hwopt.backends.vela import measure_model
    from hwopt.targets import load_target

    canonical, result = _rewrite(_standalone_bn_net(tmp_path / "bn.onnx", size=64, channels=32))
    target = load_target("ethos-u55-256")
    before, after = measure_model(canonical, target), measure_model(result.model, target)
    assert after.latency_us < 0.7 * before.latency_us, (before.latency_us, after.latency_us)


def test_a_lone_add_by_a_per_channel_constant_is_its_own_depthwise_conv(tmp_path: Path) -> None:
    """An Add whose Mul is not a site (a scalar Mul before it) stays a conv of its own, weights 1 and bias d."""
    path = tmp_path / "add.onnx"
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], "relu"),
             helper.make_node("Mul", ["r", "half"], ["m"], "scalar_mul"),
             helper.make_node("Add", ["m", "shift"], ["y"], "bn_add")]
    inits = [("w", RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3), ("half", np.array(0.5, np.float32)),
             ("shift", RNG.uniform(-0.2, 0.2, (1, 8, 1, 1)).astype(np.float32))]
    graph = helper.make_graph(nodes, "add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [numpy_helper.from_array(v, n) for n, v in inits])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    canonical, result = _rewrite(path)
    (step,) = result.steps
    assert [(o.site, o.detail) for o in step.applied] == [("aff1", "8 ch: x + d as a 1x1 depthwise conv")]
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    before = ort.InferenceSession(canonical.SerializeToString()).run(None, {"x": x})[0]
    after = ort.InferenceSession(result.model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
