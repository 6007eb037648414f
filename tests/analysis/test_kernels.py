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
