"""The example model builders: valid, runnable, well-scaled, reproducible,
and shaped like the architectures they claim to be."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from examples.build import build_example, count_params, main
from examples.builder import PRODUCER_NAME, GraphBuilder, Habits
from examples.zoo import MODELS

NAMES = list(MODELS)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every example built once (seed 0), written to disk."""
    out = tmp_path_factory.mktemp("examples")
    return {name: build_example(name, out) for name in NAMES}


@pytest.fixture(scope="module")
def models(built: dict[str, Path]) -> dict[str, onnx.ModelProto]:
    return {name: onnx.load(path) for name, path in built.items()}


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node values by tensor name."""
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _convs(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    w = _weights(model)
    return [(n, w[n.input[1]]) for n in model.graph.node if n.op_type == "Conv"]


def _is_depthwise(node: onnx.NodeProto, weight: np.ndarray) -> bool:
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return group > 1 and weight.shape[1] == 1


def _run(path: Path, batch: int = 2, seed: int = 1) -> tuple[list[onnx.ValueInfoProto], list[np.ndarray]]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [batch if isinstance(d, str) else d for d in inp.shape]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return sess.get_outputs(), sess.run(None, {inp.name: x})


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in model.graph.node)


# ---------------------------------------------------------------- every model
@pytest.mark.parametrize("name", NAMES)
def test_full_check_after_round_trip(built: dict[str, Path], name: str) -> None:
    model = onnx.load(built[name])
    onnx.checker.check_model(model, full_check=True)
    assert model.producer_name == PRODUCER_NAME
    assert len(model.opset_import) == 1 and model.opset_import[0].domain == ""
    for vi in [*model.graph.input, *model.graph.output]:
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert all(d.dim_param or d.dim_value > 0 for d in vi.type.tensor_type.shape.dim), vi.name


@pytest.mark.parametrize("name", NAMES)
def test_runs_with_finite_well_scaled_outputs(built: dict[str, Path], models, name: str) -> None:
    model = models[name]
    static = not any(isinstance(d, str) for d in _dims(model.graph.input[0]))
    batch = 1 if static else 2
    _, outputs = _run(built[name], batch)
    for vi, y in zip(model.graph.output, outputs):
        expected = [batch if isinstance(d, str) else d for d in _dims(vi)]
        assert list(y.shape) == expected, vi.name
        assert np.isfinite(y).all(), vi.name
        # A blown-up or collapsed std means BN calibration failed somewhere.
        assert 1e-3 < float(y.std()) < 1e3, (vi.name, float(y.std()))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bytes(built: dict[str, Path], name: str) -> None:
    assert MODELS[name](0).SerializeToString() == built[name].read_bytes()


def test_other_seed_other_weights(models) -> None:
    other = MODELS["mobilenetv3_small"](1)
    assert count_params(other) == count_params(models["mobilenetv3_small"])
    assert other.SerializeToString() != models["mobilenetv3_small"].SerializeToString()


def test_bn_statistics_are_not_trivial(models) -> None:
    w = _weights(models["mobilenetv2"])
    for node in models["mobilenetv2"].graph.node:
        if node.op_type == "BatchNormalization":
            mean, var = w[node.input[3]], w[node.input[4]]
            assert np.abs(mean).max() > 1e-3 and not np.allclose(var, 1.0)


# ---------------------------------------------------------------- per model
def test_mobilenetv2_structure(models) -> None:
    m = models["mobilenetv2"]
    assert m.opset_import[0].version == 13
    assert m.graph.input[0].name == "input" and _dims(m.graph.input[0]) == [1, 3, 224, 224]
    assert _dims(m.graph.output[0]) == [1, 1000]
    convs = _convs(m)
    depthwise = [c for c in convs if _is_depthwise(*c)]
    expand = [w for _, w in convs if w.shape[2:] == (1, 1) and w.shape[0] == 6 * w.shape[1]]
    # stem + 16 expand + 17 depthwise + 17 project + last 1x1
    assert (len(convs), len(depthwise), len(expand)) == (52, 17, 16)
    assert max(w.shape[0] for _, w in convs) == 1280
    ops = _ops(m)
    assert ops["BatchNormalization"] == 52 and ops["Clip"] == 35 and ops["Add"] == 10
    weights = {t.name for t in m.graph.initializer}
    assert all(len(n.input) == 3 and set(n.input[1:]) <= weights for n in m.graph.node if n.op_type == "Clip")
    names = {n.name for n in m.graph.node}
    assert "/features/features.3/conv/conv.0/conv.0.0/Conv" in names
    assert "/classifier/classifier.1/Gemm" in names


def test_efficientnet_lite0_paddle_habits(models) -> None:
    m = models["efficientnet_lite0"]
    assert m.opset_import[0].version == 17 and not m.graph.initializer
    ops = _ops(m)
    assert ops["Constant"] > 0 and ops["Clip"] == 0 and ops["Min"] == ops["Max"] == 33
    convs = _convs(m)
    depthwise = [w for n, w in convs if _is_depthwise(n, w)]
    assert len(depthwise) == 16
    assert sum(w.shape[2] == 5 for w in depthwise) == 9
    assert all(re.fullmatch(r"[a-z_0-9]+_\d+", n.name) for n in m.graph.node)
    assert "conv2d_12" in {n.name for n in m.graph.node}


def test_mobilenetv3_small_structure(models) -> None:
    m = models["mobilenetv3_small"]
    assert _dims(m.graph.input[0])[0] == "N" and _dims(m.graph.output[0])[0] == "N"
    ops = _ops(m)
    assert ops["HardSwish"] > 0 and ops["HardSigmoid"] > 0 and ops["Div"] == 1
    assert ops["GlobalAveragePool"] == 10  # 9 SE blocks + classifier
    convs = _convs(m)
    depthwise = [w for n, w in convs if _is_depthwise(n, w)]
    assert len(depthwise) == 11 and sum(w.shape[2] == 5 for w in depthwise) == 8
    assert {72, 88, 240, 120, 144, 288, 576} <= {w.shape[0] for _, w in convs}


def test_resnet18_structure(models) -> None:
    m = models["resnet18"]
    assert m.opset_import[0].version == 11
    assert _dims(m.graph.input[0])[0] == "N"
    convs = _convs(m)
    assert len(convs) == 20 and not any(_is_depthwise(*c) for c in convs)
    ops = _ops(m)
    assert ops["Identity"] > 0 and ops["MaxPool"] == 1 and ops["Add"] == 8 and ops["Gemm"] == 1


def test_ssdlite_outputs(built: dict[str, Path], models) -> None:
    m = models["ssdlite_mobilenetv2"]
    assert [o.name for o in m.graph.output] == ["boxes", "scores"]
    assert _dims(m.graph.output[0]) == [1, 3234, 4] and _dims(m.graph.output[1]) == [1, 3234, 91]
    _, (boxes, scores) = _run(built["ssdlite_mobilenetv2"], 1)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-4)
    assert sum(_is_depthwise(*c) for c in _convs(m)) > 17  # backbone + extras + heads


def test_segmentation_structure(models) -> None:
    m = models["segmentation"]
    assert _dims(m.graph.output[0]) == [1, 21, 256, 256]
    assert all(n.name == "" for n in m.graph.node)
    resizes = [n for n in m.graph.node if n.op_type == "Resize"]
    modes = sorted(a.s.decode() for n in resizes for a in n.attribute if a.name == "mode")
    assert modes == ["linear", "linear", "nearest"] and _ops(m)["Concat"] == 2


# ---------------------------------------------------------------- builder
def _tiny(opset: int, habits: Habits, seed: int = 0) -> onnx.ModelProto:
    """A little of everything at 32x32 (fast)."""
    b = GraphBuilder("tiny", opset, seed, habits)
    x = b.input("x", 3, 32, 32)
    y = b.conv_bn_act(x, 16, 3, 2, act="relu6", module="stem")
    y = b.inverted_bottleneck(y, 16, 5, 1, expand=4, act="hardswish", se_squeeze=8, module="blk")
    y = b.identity(y)
    up = b.resize(y, 2.0, "linear")
    y = b.concat([up, b.conv(x, 8, 1, module="skip")])
    y = b.act(b.conv(y, 4, 3, bias=True, module="head"), "silu")
    b.output(y, "y")
    return b.build()


@pytest.mark.parametrize("style", ["clip_inputs", "minmax"])
def test_builder_opset11_habits(style: str) -> None:
    habits = Habits(relu6_style=style, hardswish_style="torch_legacy", identity_nodes=True,
                    dynamic_batch=True, weights_as_constant_nodes=True, naming="paddle")
    m = _tiny(11, habits)
    ops = _ops(m)
    assert ops["Resize"] == 1 and ops["Identity"] == 1 and ops["Div"] == 2  # two hard-swishes
    resize = next(n for n in m.graph.node if n.op_type == "Resize")
    assert resize.input[1]  # Resize-11 needs a real roi input
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": np.zeros((3, 3, 32, 32), np.float32)})
    assert y.shape == (3, 4, 32, 32)


def test_builder_fused_bn_matches_unfused() -> None:
    unfused, fused = _tiny(17, Habits()), _tiny(17, Habits(unfused_bn=False))
    assert _ops(fused)["BatchNormalization"] == 0 and _ops(unfused)["BatchNormalization"] > 0
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)

    def run(m: onnx.ModelProto) -> np.ndarray:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x})[0]

    np.testing.assert_allclose(run(fused), run(unfused), rtol=1e-3, atol=1e-3)


def test_builder_rejects_hardswish_op_before_opset14() -> None:
    with pytest.raises(ValueError, match="opset >= 14"):
        _tiny(13, Habits(hardswish_style="op"))


def test_cli_builds_named_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "mobilenetv3_small", "--seed", "2"]) == 0
    assert (tmp_path / "mobilenetv3_small.onnx").exists()
    assert "mobilenetv3_small" in capsys.readouterr().out


def test_written_model_respects_the_umask(tmp_path: Path) -> None:
    """The model gets the umask's permissions like any output (a bare mkstemp made it 0600: unreadable to the
    group that shares a build folder)."""
    import os

    old = os.umask(0o022)
    try:
        path = build_example("mobilenetv3_small", tmp_path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
