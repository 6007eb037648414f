"""How the schedule describes kernels: geometry read from real ONNX graphs written to disk and read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hwopt.analysis.kernels import schedule


def _gated_mul(path: Path, gate_first: bool) -> onnx.ModelProto:
    """Squeeze-excite's last step: x [1, 32, 56, 56] times a per-channel gate [1, 32, 1, 1]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 56, 56])
    gate = helper.make_tensor_value_info("gate", TensorProto.FLOAT, [1, 32, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 56, 56])
    inputs = ["gate", "x"] if gate_first else ["x", "gate"]  # torchvision writes ``scale * input``
    graph = helper.make_graph([helper.make_node("Mul", inputs, ["y"], name="mul")], "se", [x, gate], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return onnx.load(path)


@pytest.mark.parametrize("gate_first", [True, False])
def test_an_eltwise_kernel_with_a_broadcast_operand_has_the_output_geometry(tmp_path: Path, gate_first: bool) -> None:
    model = _gated_mul(tmp_path / "se.onnx", gate_first)
    (sk,) = schedule(model).kernels
    k = sk.kernel
    assert (k.kind, k.op, k.inputs) == ("eltwise", "Mul", 2)
    assert (k.cin, k.h, k.w, k.cout, k.out_h, k.out_w) == (32, 56, 56, 32, 56, 56)
    # The model is what onnxruntime runs: its output really has that shape.
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    out = session.run(None, {"x": rng.standard_normal((1, 32, 56, 56), np.float32),
                             "gate": rng.standard_normal((1, 32, 1, 1), np.float32)})[0]
    assert out.shape == (1, k.cout, k.out_h, k.out_w)


def test_both_operand_orders_are_one_kernel(tmp_path: Path) -> None:
    first = schedule(_gated_mul(tmp_path / "a.onnx", True)).kernels[0].kernel
    second = schedule(_gated_mul(tmp_path / "b.onnx", False)).kernels[0].kernel
    assert first == second


def _conv_model(path: Path, weight: np.ndarray) -> onnx.ModelProto:
    cout, cin = weight.shape[:2]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, 16, 16])
    w = onnx.numpy_helper.from_array(weight.astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "conv", [x], [y], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return onnx.load(path)


def test_a_pruned_conv_says_its_share_of_int8_zeros_and_padding_is_not_pruning(tmp_path: Path) -> None:
    """Kernel.weight_zeros: the share of weights that round to int8 zero per output channel, in tens;
    channels of zeros (what align-channels pads with) leave the share as it was."""
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((32, 16, 3, 3))
    pruned = np.where(np.abs(dense) <= np.quantile(np.abs(dense), 0.7), 0.0, dense)
    padded = np.zeros((48, 24, 3, 3))
    padded[:32, :16] = pruned
    tiny = dense * np.where(rng.random(dense.shape) < 0.5, 1e-4, 1.0)  # half the values under half a step

    def share(name: str, weight: np.ndarray) -> int:
        kernels = schedule(_conv_model(tmp_path / f"{name}.onnx", weight)).kernels
        return kernels[0].kernel.weight_zeros

    assert share("dense", dense) == 0
    assert share("pruned", pruned) == 70
    assert share("padded", padded) == 70
    assert share("tiny", tiny) == 50
    assert "zeros 70%" in schedule(onnx.load(tmp_path / "pruned.onnx")).kernels[0].kernel.describe()


@pytest.mark.parametrize("slopes, form", [([0.25] * 8, "PRelu(one slope)"),
                                          ([-0.5, 0.0, 0.3, 1.0, 0.2, 0.1, 0.9, 0.4], "PRelu"),
                                          ([0.1, 0.2, 1.3, 0.4, 0.5, 0.6, 0.7, 0.8], "PRelu(slopes over 1)")])
def test_a_standalone_prelu_is_described_by_the_form_its_slopes_give(tmp_path: Path, slopes: list, form: str) -> None:
    """One slope, slopes all <= 1, or a slope over 1: three lowerings on an NPU compiler (Vela 5.2: a
    LeakyReLU, max(alpha * x, x), or MINIMUM + MUL + RELU + ADD), so three kernel ops."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    slope = onnx.numpy_helper.from_array(np.array(slopes, np.float32).reshape(8, 1, 1), "slope")
    graph = helper.make_graph([helper.make_node("PRelu", ["x", "slope"], ["y"], name="prelu")], "prelu", [x], [y],
                              initializer=[slope])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "prelu.onnx")
    kernels = schedule(onnx.load(tmp_path / "prelu.onnx")).kernels
    assert [(k.kernel.kind, k.kernel.op) for k in kernels] == [("act", form)]


def test_a_transpose_that_moves_no_data_in_nhwc_before_a_reshape_is_a_view_where_the_target_says(tmp_path: Path) -> None:
    """tf2onnx's input Transpose (NHWC -> NCHW, read by a conv) moves data; the NCHW -> NHWC Transpose before a
    head's Reshape does not in NHWC storage (hwopt's TFLite writer writes one RESHAPE): a view under
    ``nhwc_views``, a layout kernel for every other target."""
    from hwopt.analysis.kernel import FusionPolicy

    w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    shape = onnx.numpy_helper.from_array(np.array([1, -1, 2], np.int64), "shape")
    nodes = [helper.make_node("Transpose", ["x"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["nhwc", "shape"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024, 2])], initializer=[w, shape])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    kinds = {sk.nodes[0]: sk.kernel.kind for sk in schedule(model, FusionPolicy(nhwc_views=True)).kernels}
    assert kinds["to_nchw"] == "layout" and kinds["to_nhwc"] == "view"
    assert {sk.nodes[0]: sk.kernel.kind for sk in schedule(model).kernels}["to_nhwc"] == "layout"
    # a Transpose the graph also outputs is written as a TRANSPOSE: not a view
    model.graph.output.append(helper.make_tensor_value_info("nhwc", TensorProto.FLOAT, [1, 16, 16, 8]))
    kinds = {sk.nodes[0]: sk.kernel.kind for sk in schedule(model, FusionPolicy(nhwc_views=True)).kernels}
    assert kinds["to_nhwc"] == "layout"
