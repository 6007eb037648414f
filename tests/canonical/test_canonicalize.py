"""Loading and canonicalisation of messy real-export habits: always exact, verified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.calibration.samples import OrtRunner, random_inputs
from hwopt.canonical.canonicalize import canonicalize, load_canonical
from hwopt.errors import HwoptError
from hwopt.io.model import InputShape, load_model
from hwopt.fidelity.verify import compare_models
from tests.conftest import EXAMPLES


@pytest.mark.parametrize("name", EXAMPLES)
def test_canonicalisation_is_exact_and_clean(example_path, name: str) -> None:
    original, canonical, report = load_canonical(example_path(name))
    ops = {n.op_type for n in canonical.graph.node}
    assert "BatchNormalization" not in ops and "Constant" not in ops and "Identity" not in ops
    assert report.nodes_after < report.nodes_before
    assert all(n.name for n in canonical.graph.node)
    assert len({n.name for n in canonical.graph.node}) == len(canonical.graph.node)
    onnx.checker.check_model(canonical, full_check=True)
    # Independent re-check on other inputs than the ones canonicalize verified with.
    comparison = compare_models(original, canonical, random_inputs(original, 2, seed=7))
    assert comparison.exact, comparison.to_dict()
    assert [i.name for i in canonical.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in canonical.graph.output] == [o.name for o in original.graph.output]


def test_constant_node_weights_become_initializers_and_minmax_clamps_clip(example_path) -> None:
    original = load_model(example_path("efficientnet_lite0"))
    assert not original.graph.initializer
    _, canonical, report = load_canonical(example_path("efficientnet_lite0"))
    assert report.removed("Constant") > 100
    assert len(canonical.graph.initializer) > 50
    ops = [n.op_type for n in canonical.graph.node]
    assert "Min" not in ops and "Max" not in ops and ops.count("Clip") == 33
    assert "rewrote 33 Max(Min(x, hi), lo) clamps as Clip" in report.notes


def test_dynamic_batch_is_kept_and_other_dims_must_be_known(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", "W"])
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    with pytest.raises(HwoptError, match=r"'H' and 'W' open \(dims 3 and 4 of 4.*--input-shape x=1x3xHxW"):
        load_canonical(path)
    original, canonical, _ = load_canonical(path, [InputShape.parse("x=1x3x16x16")])
    assert canonical.graph.input[0].type.tensor_type.shape.dim[2].dim_value == 16
    with pytest.raises(HwoptError, match="fixed to 3"):
        load_canonical(path, [InputShape.parse("x=1x5x16x16")])


def test_external_data_model_loads_and_missing_data_is_a_clear_error(tmp_path: Path, example_path) -> None:
    model = onnx.load(example_path("mobilenetv2"))
    path = tmp_path / "ext.onnx"
    external = onnx.ModelProto()
    external.CopyFrom(model)  # save_model converts the model it is given in place
    onnx.save_model(external, path, save_as_external_data=True, location="ext.weights", size_threshold=1024)
    assert (tmp_path / "ext.weights").stat().st_size > 1_000_000
    loaded = load_model(path)
    runner_a, runner_b = OrtRunner(loaded), OrtRunner(model)
    inputs = random_inputs(model, 1, 0)
    np.testing.assert_array_equal(runner_a.run_all(inputs)["output"], runner_b.run_all(inputs)["output"])
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(HwoptError, match="missing external data file 'ext.weights'"):
        load_model(path)


@pytest.mark.parametrize("opset", [10, 99])
def test_unsupported_opset_is_refused(tmp_path: Path, opset: int) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(HwoptError, match=f"unsupported opset {opset}"):
        load_model(path)


@pytest.mark.parametrize("content", [b"", b"hello, not a model\n" * 10])
def test_not_onnx_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(HwoptError):
        load_model(path)


def test_truncated_file_is_refused(tmp_path: Path, example_path) -> None:
    data = example_path("mobilenetv3_small").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HwoptError, match="truncated|not an ONNX"):
        load_model(path)


def test_canonicalize_detects_a_changed_function(example_path) -> None:
    """The verification has teeth: a model with a perturbed weight is not 'exact' against the original."""
    original, canonical, _ = load_canonical(example_path("mobilenetv2"))
    broken = onnx.ModelProto()
    broken.CopyFrom(canonical)
    weight = next(t for t in broken.graph.initializer if len(t.dims) == 4)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 0.05 * float(np.abs(values).max())
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    comparison = compare_models(original, broken, random_inputs(original, 2, seed=3))
    assert not comparison.exact
    assert comparison.worst_rel_max_abs > 1e-4


def test_canonicalize_verifies_by_default(example_path) -> None:
    model = load_model(example_path("resnet18"))
    _, report = canonicalize(model)
    assert report.max_rel_error < 1e-4
    assert report.removed("Identity") == 5 and report.removed("BatchNormalization") == 20


def _keras_squeeze_excite(path: Path, expose_squeeze: bool = False) -> Path:
    """tf2onnx's squeeze-excite: GlobalAveragePool -> Squeeze -> Reshape back to (1, C, 1, 1) -> Conv -> Reshape
    of (1, 4, 1, 1) to itself -> Conv -> Sigmoid -> Mul with the input."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])
    outputs = [y] + ([helper.make_tensor_value_info("squeezed", TensorProto.FLOAT, [1, 16])] if expose_squeeze else [])
    inits = [numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([1, 16, 1, 1], np.int64), "shape16"),
             numpy_helper.from_array(np.array([1, 4, 1, 1], np.int64), "shape4"),
             numpy_helper.from_array(rng.standard_normal((4, 16, 1, 1)).astype(np.float32), "w_reduce"),
             numpy_helper.from_array(rng.standard_normal((16, 4, 1, 1)).astype(np.float32), "w_expand")]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"], name="pool"),
             helper.make_node("Squeeze", ["pooled", "axes"], ["squeezed"], name="squeeze"),
             helper.make_node("Reshape", ["squeezed", "shape16"], ["unsqueezed"], name="reshape16"),
             helper.make_node("Conv", ["unsqueezed", "w_reduce"], ["reduced"], name="reduce"),
             helper.make_node("Relu", ["reduced"], ["act"], name="relu"),
             helper.make_node("Reshape", ["act", "shape4"], ["same"], name="reshape4"),
             helper.make_node("Conv", ["same", "w_expand"], ["expanded"], name="expand"),
             helper.make_node("Sigmoid", ["expanded"], ["gate"], name="sigmoid"),
             helper.make_node("Mul", ["x", "gate"], ["y"], name="excite")]
    graph = helper.make_graph(nodes, "se", [x], outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_view_chains_that_end_in_their_starting_shape_are_dropped(tmp_path: Path) -> None:
    path = _keras_squeeze_excite(tmp_path / "se.onnx")
    original, canonical, report = load_canonical(path)  # verified exact inside
    ops = [n.op_type for n in canonical.graph.node]
    assert "Squeeze" not in ops and "Reshape" not in ops, ops
    assert any("view op(s)" in note for note in report.notes)
    reduce_conv = next(n for n in canonical.graph.node if n.op_type == "Conv")
    assert reduce_conv.input[0] == next(n for n in canonical.graph.node if n.op_type == "GlobalAveragePool").output[0]
    assert {t.name for t in canonical.graph.initializer}.isdisjoint({"axes", "shape16", "shape4"})
    onnx.checker.check_model(canonical, full_check=True)
    comparison = compare_models(original, canonical, random_inputs(original, 2, seed=3))
    assert comparison.exact, comparison.to_dict()
    # The channel group of the squeeze-excite is no longer pinned by a constant target shape.
    from hwopt.analysis.channel_groups import find_channel_groups
    from hwopt.analysis.graph import import_graph

    groups = find_channel_groups(import_graph(canonical))
    assert groups and not any("Reshape" in b for g in groups for b in g.blockers)


def test_a_view_the_graph_outputs_is_kept(tmp_path: Path) -> None:
    path = _keras_squeeze_excite(tmp_path / "se_out.onnx", expose_squeeze=True)
    _, canonical, _ = load_canonical(path)
    ops = [n.op_type for n in canonical.graph.node]
    assert ops.count("Squeeze") == 1 and ops.count("Reshape") == 0  # the Reshapes still go
    assert [o.name for o in canonical.graph.output] == ["y", "squeezed"]


def test_a_pad_of_zeros_and_a_slice_of_everything_are_dropped_but_a_reversing_slice_is_kept(tmp_path: Path) -> None:
    """tf2onnx's Keras 'same' conv2d_transpose: ConvTranspose, the cropping Slice (kept: it changes the shape),
    then a Pad of all-zero pads (dropped); a full-range Slice goes too, a full-range Slice of step -1 stays."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])
    ints = {"starts": [1, 1], "ends": [17, 17], "axes": [2, 3], "pads": [0] * 8, "all_starts": [0], "all_ends": [16],
            "rev_starts": [-1], "rev_ends": [-100], "one_axis": [3], "step_back": [-1]}
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4, 4, 4)).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()]
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["up"], strides=[2, 2], name="deconv"),
             helper.make_node("Slice", ["up", "starts", "ends", "axes"], ["crop"], name="crop"),
             helper.make_node("Pad", ["crop", "pads"], ["padded"], name="pad_nothing"),
             helper.make_node("Slice", ["padded", "all_starts", "all_ends", "one_axis"], ["same"], name="slice_all"),
             helper.make_node("Slice", ["same", "rev_starts", "rev_ends", "one_axis", "step_back"], ["y"],
                              name="reverse")]
    graph = helper.make_graph(nodes, "keras_deconv", [x], [y], inits)
    path = tmp_path / "deconv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    original, canonical, report = load_canonical(path)  # verified exact inside
    assert [n.name for n in canonical.graph.node if n.op_type in ("Pad", "Slice")] == ["crop", "reverse"]
    assert any("Pad/Slice" in note for note in report.notes)
    comparison = compare_models(original, canonical, random_inputs(original, 2, seed=1))
    assert comparison.exact, comparison.to_dict()


def _keras_hard_swish(path: Path, opset: int) -> Path:
    """Keras' MobileNetV3 activations as tf2onnx writes them: hard-swish x * (relu6(x + 3) * 1/6) after a conv,
    and a hard-sigmoid gate relu6(z) * 1/6 (the + 3 taken into the conv's bias) in a squeeze-excite."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])
    inits = [numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((16, 16, 1, 1)).astype(np.float32) * 0.1, "w_gate"),
             numpy_helper.from_array((rng.standard_normal(16) + 3).astype(np.float32), "b_gate"),
             numpy_helper.from_array(np.array(3.0, np.float32), "three"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(6.0, np.float32), "six"),
             numpy_helper.from_array(np.array(1 / 6, np.float32), "sixth")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "three"], ["c3"], name="add"),
             helper.make_node("Clip", ["c3", "zero", "six"], ["r6"], name="relu6"),
             helper.make_node("Mul", ["r6", "sixth"], ["hs"], name="truediv"),
             helper.make_node("Mul", ["c", "hs"], ["act"], name="mul"),
             helper.make_node("GlobalAveragePool", ["act"], ["pooled"], name="pool"),
             helper.make_node("Conv", ["pooled", "w_gate", "b_gate"], ["z"], name="gate_conv"),
             helper.make_node("Clip", ["z", "zero", "six"], ["z6"], name="gate_relu6"),
             helper.make_node("Mul", ["sixth", "z6"], ["gate"], name="gate_div"),
             helper.make_node("Mul", ["act", "gate"], ["y"], name="excite")]
    graph = helper.make_graph(nodes, "hard", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


@pytest.mark.parametrize("opset", [13, 17])
def test_spelled_out_hard_sigmoids_become_one_op(tmp_path: Path, opset: int) -> None:
    from hwopt.backends.ort_cpu import TimingSettings, model_conversions
    from hwopt.targets import load_target

    original, canonical, report = load_canonical(_keras_hard_swish(tmp_path / "hard.onnx", opset))  # verified
    ops = [n.op_type for n in canonical.graph.node]
    assert "Clip" not in ops and "Add" not in ops
    assert ops.count("HardSigmoid") == 2 and ops.count("Mul") == 2  # the hard-swish's x * gate(x) stays
    gate = next(n for n in canonical.graph.node if n.op_type == "HardSigmoid" and n.input[0] == "z")
    assert {a.name: round(a.f, 6) for a in gate.attribute} == {"alpha": round(1 / 6, 6), "beta": 0.0}
    comparison = compare_models(original, canonical, random_inputs(original, 2, seed=5))
    assert comparison.exact and comparison.worst_rel_max_abs < 1e-5, comparison.to_dict()
    # What it is for: onnxruntime now runs the activations inside its blocked conv, without the layout
    # conversions the four loose ops needed.
    settings = TimingSettings.from_target(load_target("cpu"))
    assert model_conversions(canonical, settings).count < model_conversions(original, settings).count


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_bias_add_and_batchnorm_fold_into_it(group: int) -> None:
    """paddle2onnx's detector head: ConvTranspose, its bias as a separate per-channel Add, then a BatchNorm and a
    ReLU. All fold into the ConvTranspose (grouped too), outputs unchanged (canonicalize verifies it)."""
    rng = np.random.default_rng(0)
    cin, cout, k = 8, 6, 2
    inits = [numpy_helper.from_array(rng.normal(size=(cin, cout // group, k, k)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(1, cout, 1, 1)).astype(np.float32), "b"),
             numpy_helper.from_array(rng.uniform(0.5, 2, cout).astype(np.float32), "g"),
             numpy_helper.from_array(rng.normal(size=cout).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.normal(size=cout).astype(np.float32), "mu"),
             numpy_helper.from_array(rng.uniform(0.5, 2, cout).astype(np.float32), "var")]
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["t"], name="up", strides=[2, 2], group=group),
             helper.make_node("Add", ["t", "b"], ["a"], name="bias"),
             helper.make_node("BatchNormalization", ["a", "g", "beta", "mu", "var"], ["n"], name="bn", epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, 10, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    canonical, report = canonicalize(model)  # verify=True: raises if the outputs changed
    assert [n.op_type for n in canonical.graph.node] == ["ConvTranspose", "Relu"]
    assert report.max_rel_error < 1e-5
    assert any("ConvTranspose" in note for note in report.notes)


def test_a_keras_relu_with_a_max_value_becomes_one_clip_and_canonicalising_again_changes_nothing(tmp_path: Path) -> None:
    """Keras' relu(max_value=6), through tf2onnx: Relu, Min(x, 6), Max(x, 0). The clamp becomes a Clip and
    the Relu before it fuses into it in the same call (a ReLU6 the writer and the schedule fuse into the
    conv), so a second canonicalisation finds nothing more to do."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    inits = [numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(6.0, np.float32), "six"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Min", ["r", "six"], ["m"], name="min"),
             helper.make_node("Max", ["m", "zero"], ["y"], name="max")]
    graph = helper.make_graph(nodes, "keras_relu6", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "relu6.onnx")
    _, canonical, report = load_canonical(tmp_path / "relu6.onnx")
    assert [n.op_type for n in canonical.graph.node] == ["Conv", "Clip"]
    again, _ = canonicalize(canonical)
    assert [n.op_type for n in again.graph.node] == ["Conv", "Clip"]
