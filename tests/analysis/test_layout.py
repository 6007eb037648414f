"""Layout conversions inside a model: predicted from the schedule, measured with onnxruntime's profiler.

Real onnxruntime sessions of the example models; the prediction (hwopt.analysis.layout)
must name as many conversions as onnxruntime really runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hwopt.backends.ort_cpu import TimingSettings, model_conversions
from hwopt.canonical.canonicalize import canonicalize
from hwopt.analysis.kernels import schedule
from hwopt.analysis.layout import reorder_bytes
from hwopt.io.model import load_model
from hwopt.targets import load_target


def _canonical(path: Path):
    return canonicalize(load_model(path), verify=False)[0]


def _measured(canonical):
    return model_conversions(canonical, TimingSettings.from_target(load_target("cpu")))


@pytest.mark.parametrize("name", ["mobilenetv3_small", "segmentation", "ssdlite_mobilenetv2", "mobilenetv2"])
def test_predicted_conversions_are_the_ones_onnxruntime_runs(example_path, name: str) -> None:
    canonical = _canonical(example_path(name))
    kernels = [sk.kernel for sk in schedule(canonical, load_target("cpu").fusion).kernels]
    predicted = [reorder_bytes(k) for k in kernels]
    count, size = sum(c for c, _ in predicted), sum(b for _, b in predicted)
    measured = _measured(canonical)
    assert count == measured.count
    # Bytes: the plain-layout size (onnxruntime's profiler counts its output, padded for ReorderInput).
    assert size == pytest.approx(measured.bytes, rel=0.10)
    assert measured.us > 0
    # The flags ride on the kernels; the isolated kernel (what a backend measures) drops them.
    flagged = [k for k in kernels if k.reorder_in or k.reorder_out]
    assert len(flagged) >= 1 and all(not (k.isolated().reorder_in or k.isolated().reorder_out) for k in flagged)
    assert "[reorder" in flagged[0].describe()


def test_squeeze_excite_pays_three_conversions_per_block(example_path) -> None:
    """MobileNetV3-Small: each SE Mul reads two blocked tensors and feeds a blocked conv."""
    kernels = [sk.kernel for sk in schedule(_canonical(example_path("mobilenetv3_small")),
                                            load_target("cpu").fusion).kernels]
    muls = [i for i, k in enumerate(kernels) if k.kind == "eltwise" and k.op == "Mul"]
    assert len(muls) >= 9
    assert all(kernels[i].reorder_in is False and kernels[i].reorder_out is False for i in muls)
    into = [kernels[i + 1] for i in muls if i + 1 < len(kernels) and kernels[i + 1].kind == "conv"]
    assert into and all(k.reorder_in for k in into)


def test_targets_without_a_blocked_layout_carry_no_conversions(example_path) -> None:
    canonical = _canonical(example_path("mobilenetv3_small"))
    assert load_target("npu32").fusion.blocked_layout == ""
    assert not any(sk.kernel.reorder_in or sk.kernel.reorder_out
                   for sk in schedule(canonical, load_target("npu32").fusion).kernels)


@pytest.mark.parametrize("name", ["torch_dynamo_efficientnet_b0_w025.onnx", "torch_dynamo_mobilenet_v3_small_w025.onnx",
                                  "torch_dynamo_lraspp_mobilenet_v3_large_w025.onnx",
                                  "torch_unet_db_head_convtranspose.onnx"])
def test_real_exports_convert_where_predicted(name: str) -> None:
    """torch dynamo exports (SiLU SE with ReduceMean, hardswish SE, bilinear Resize); ConvTranspose runs plain."""
    canonical = _canonical(Path(__file__).parent.parent / "data" / name)
    kernels = [sk.kernel for sk in schedule(canonical, load_target("cpu").fusion).kernels]
    measured = _measured(canonical)
    assert sum(reorder_bytes(k)[0] for k in kernels) == measured.count > 1


def _atrous(dilation: int, hw: int = 14):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((8, 16, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], dilations=[dilation] * 2,
                            pads=[dilation] * 4)
    graph = helper.make_graph([node], "atrous", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, hw, hw])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, weight


@pytest.mark.parametrize("dilation,kernel", [(1, 3), (2, 3), (12, 3), (14, 1), (36, 1)])
def test_an_atrous_conv_whose_outer_taps_only_read_padding_is_a_1x1_kernel(dilation: int, kernel: int) -> None:
    """...and the descriptor keeps the dilation of a conv whose taps read the map (Kernel.dilation), 1 for the
    1x1 it computes otherwise."""
    import numpy as np
    import onnxruntime as ort

    model, weight = _atrous(dilation)
    (sk,) = schedule(model).kernels
    assert (sk.kernel.kernel, sk.kernel.kw) == (kernel, kernel)
    assert sk.kernel.dilation == (dilation if kernel == 3 else 1)
    if kernel == 1:  # the claim is exact: the centre tap alone gives the same output
        x = np.random.default_rng(1).standard_normal((1, 16, 14, 14)).astype(np.float32)
        y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        centre = np.einsum("oc,nchw->nohw", weight[:, :, 1, 1], x)
        np.testing.assert_allclose(y, centre, rtol=1e-4, atol=1e-4)


def test_convs_whose_input_channels_are_not_a_multiple_of_4_stay_plain(tmp_path: Path) -> None:
    """ShuffleNetV2's 58-channel branches: onnxruntime pads a conv's output channels to its block, but a conv
    reading 58 channels (and a 58-channel depthwise conv) runs in the plain layout."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w1": (58, 64, 1, 1), "w2": (58, 1, 3, 3), "w3": (64, 58, 1, 1), "w4": (64, 1, 3, 3)}
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.1, n) for n, s in weights.items()]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
             helper.make_node("Relu", ["a"], ["ar"], name="r1"),
             helper.make_node("Conv", ["ar", "w2"], ["b"], group=58, pads=[1, 1, 1, 1], name="dw58"),
             helper.make_node("Conv", ["b", "w3"], ["c"], name="c3"),
             helper.make_node("Relu", ["c"], ["cr"], name="r3"),
             helper.make_node("Conv", ["cr", "w4"], ["y"], group=64, pads=[1, 1, 1, 1], name="dw64")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 28, 28])], inits)
    path = tmp_path / "odd_channels.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    canonical = _canonical(path)
    kernels = [sk.kernel for sk in schedule(canonical, load_target("cpu").fusion).kernels]
    predicted = sum(reorder_bytes(k)[0] for k in kernels)
    assert predicted == _measured(canonical).count
    # c1 (64 -> 58) blocked: in and out; dw58 and c3 (reads 58) plain; dw64 blocked: in, and out to the graph.
    assert [(k.reorder_in, k.reorder_out) for k in kernels] == [(True, True), (False, False), (False, False),
                                                                (True, True)]
