"""What a target runs as one kernel: onnxruntime's CPU provider fuses one activation into a conv; the
learnable affine PP-LCNetV3 (PP-OCRv4) puts after every hard-swish runs as its own elementwise kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hwopt.canonical.canonicalize import load_canonical
from hwopt.analysis.kernels import schedule
from hwopt.targets import load_target


def _lcnet_unit(path: Path) -> Path:
    """Conv -> HardSwish -> Mul(scale) -> Add(bias), as paddle2onnx writes PP-LCNetV3's conv unit."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1.3], np.float32), "scale"),
             numpy_helper.from_array(np.array([0.1], np.float32), "bias")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("HardSwish", ["c"], ["a"], name="act"),
             helper.make_node("Mul", ["a", "scale"], ["m"], name="lab_scale"),
             helper.make_node("Add", ["m", "bias"], ["y"], name="lab_bias")]
    graph = helper.make_graph(nodes, "lcnet_unit", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32, 32])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_cpu_fuses_one_activation_and_runs_the_affine_alone(tmp_path: Path) -> None:
    path = _lcnet_unit(tmp_path / "unit.onnx")
    # What onnxruntime itself runs, at the level the cpu target times with: the affine's nodes survive.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "ort_optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ran = [n.op_type for n in onnx.load(tmp_path / "ort_optimized.onnx").graph.node]
    assert ran.count("Mul") == 1 and ran.count("Add") == 1, ran

    _, canonical, _ = load_canonical(path)
    cpu = schedule(canonical, load_target("cpu").fusion).kernels
    assert [(k.kernel.kind, k.kernel.act or k.kernel.op) for k in cpu] == [
        ("conv", "hardswish"), ("act", "Mul"), ("act", "Add")]
    # An NPU's vector unit applies the whole chain on the conv's way out: one kernel.
    npu = schedule(canonical, load_target("npu32").fusion).kernels
    assert [(k.kernel.kind, k.kernel.act) for k in npu] == [("conv", "hardswish+affine+affine")]


def test_a_target_file_can_run_an_activation_apart(tmp_path: Path) -> None:
    """``[fusion] separate`` (the Ethos-U targets: PReLU, as Vela lowers it) cuts the activation chain before
    the first activation it names: that activation and what follows it become kernels of their own. A kind
    that is not one node in a canonical graph (hard-swish is x * hardsigmoid(x)) is refused in one line."""
    import pytest

    from hwopt.errors import HwoptError
    from hwopt.targets import load_target_file

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.2, (8, 16, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("LeakyRelu", ["c"], ["a"], name="act", alpha=0.1),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "leaky", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    path = tmp_path / "leaky.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    _, canonical, _ = load_canonical(path)
    text = Path(load_target("npu32").path).read_text()
    fused = [(k.kernel.kind, k.kernel.act or k.kernel.op) for k in schedule(canonical, load_target("npu32").fusion).kernels]
    assert fused == [("conv", "leakyrelu+relu"), ("conv", "")], fused
    own = tmp_path / "apart.toml"
    own.write_text(text.replace("[fusion]\n", '[fusion]\nseparate = ["leakyrelu"]\n', 1))
    apart = [(k.kernel.kind, k.kernel.act or k.kernel.op) for k in schedule(canonical, load_target_file(own).fusion).kernels]
    assert apart == [("conv", ""), ("act", "LeakyRelu"), ("act", "Relu"), ("conv", "")], apart
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[fusion]\n", '[fusion]\nseparate = ["hardswish"]\n', 1))
    with pytest.raises(HwoptError, match=r"bad\.toml: \[fusion\] separate must be a list of one-node activation"):
        load_target_file(bad)
