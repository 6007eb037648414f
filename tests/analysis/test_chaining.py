"""Which Adds the schedule chains into the kernel before them (``[fusion] chain_elementwise``, Ethos-U85).

Graphs are written to disk as real ONNX files; whether Vela agrees is checked against Vela itself in
``tests/backends/test_vela_context.py::test_u85_chains_the_adds_the_schedule_chains``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwopt.analysis.chaining import vela_order
from hwopt.analysis.graph import import_graph
from hwopt.analysis.kernel import FusionPolicy
from hwopt.analysis.kernels import schedule

CHAINING = FusionPolicy(chain_elementwise=True)


def residual_adds(path: Path, channels: int = 16) -> onnx.ModelProto:
    """Three residual Adds on a 16x16 map:

    - ``add_single``: Add(conv_a(x), x), conv_a's output read by the Add alone: chained;
    - ``add_shared``: Add(conv_b(y), y), conv_b's output also read by the graph's second output: paid;
    - ``add_pad_first``: Add(Pad(z), conv_c(w)) with the channel-padded shortcut as the first input, so the Pad
      runs just before the Add: paid (a Pad starts no chain); with the operands swapped it would chain.
    """
    rng = np.random.default_rng(0)
    c, half = channels, channels // 2
    inits, nodes = [], []

    def conv(name: str, x: str, cin: int, cout: int) -> str:
        inits.append(numpy_helper.from_array(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.1, f"{name}_w"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w"], [f"{name}_out"], name=name, pads=[1, 1, 1, 1]))
        return f"{name}_out"

    nodes.append(helper.make_node("Relu", ["x"], ["x1"], name="relu_in"))
    a = conv("conv_a", "x1", c, c)
    nodes.append(helper.make_node("Add", [a, "x1"], ["y"], name="add_single"))
    b = conv("conv_b", "y", c, c)
    nodes.append(helper.make_node("Add", [b, "y"], ["z"], name="add_shared"))
    squeeze = conv("conv_s", "z", c, half)
    inits.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 0, half, 0, 0], np.int64), "pads"))
    nodes.append(helper.make_node("Pad", [squeeze, "pads"], ["padded"], name="pad"))
    w = conv("conv_c", "z", c, c)
    nodes.append(helper.make_node("Add", ["padded", w], ["out"], name="add_pad_first"))
    shape = [1, c, 16, 16]
    graph = helper.make_graph(nodes, "residual_adds", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape),
                               helper.make_tensor_value_info(b, TensorProto.FLOAT, shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(onnx.shape_inference.infer_shapes(model), path)
    return onnx.load(path)


def _adds(model: onnx.ModelProto, policy: FusionPolicy) -> tuple[list[str], list[str]]:
    """(Adds left as kernels of their own, Adds inside another kernel)."""
    own, inside = [], []
    for sk in schedule(model, policy).kernels:
        for name in sk.nodes:
            if name.startswith("add_"):
                (own if sk.nodes[0] == name else inside).append(name)
    return sorted(own), sorted(inside)


def test_an_add_chains_into_the_conv_run_just_before_it_when_it_alone_reads_the_conv(tmp_path: Path) -> None:
    model = residual_adds(tmp_path / "adds.onnx")
    assert _adds(model, CHAINING) == (["add_pad_first", "add_shared"], ["add_single"])
    chained = next(sk for sk in schedule(model, CHAINING).kernels if "add_single" in sk.nodes)
    assert chained.kernel.kind == "conv" and chained.kernel.act == "add" and chained.output == "y"
    assert "x1" in chained.inputs  # the shortcut is read by the conv's kernel now
    # Without the policy (every other target) each Add is a kernel of its own.
    assert _adds(model, FusionPolicy()) == (["add_pad_first", "add_shared", "add_single"], [])


def test_swapping_the_operands_of_an_add_after_a_pad_lets_it_chain(tmp_path: Path) -> None:
    model = residual_adds(tmp_path / "adds.onnx")
    add = next(n for n in model.graph.node if n.name == "add_pad_first")
    add.input[0], add.input[1] = add.input[1], add.input[0]
    onnx.save(model, tmp_path / "swapped.onnx")
    assert _adds(onnx.load(tmp_path / "swapped.onnx"), CHAINING) == (["add_shared"], ["add_pad_first", "add_single"])


def test_vela_order_runs_the_first_input_last(tmp_path: Path) -> None:
    order = [n.name for n in vela_order(import_graph(residual_adds(tmp_path / "adds.onnx")))]
    assert order.index("pad") == order.index("add_pad_first") - 1
    assert order.index("conv_a") == order.index("add_single") - 1


def test_a_narrow_add_after_a_conv_is_not_chained(tmp_path: Path) -> None:
    """Vela reshapes an Add of fewer than 8 channels to a deeper shape first, which a conv's group refuses."""
    model = residual_adds(tmp_path / "narrow.onnx", channels=4)
    own, inside = _adds(model, CHAINING)
    assert "add_single" in own and inside == []


def unfolded_batchnorms(path: Path, channels: int = 16) -> onnx.ModelProto:
    """tf2onnx's Keras habits on a 32x32 map: ``conv_bn`` + ReLU, then the BatchNormalization as ``bn_mul`` and
    ``bn_add`` by [1, C, 1, 1] constants, a 2x2 ``pool`` and a ``pool_relu`` after it; then a PReLU spelled
    as ``p_max`` = Max(y, 0), ``p_min`` = Min(y, 0), ``p_mul`` = Mul(p_min, slopes), ``p_add`` (TF.js'
    MobileFaceNet)."""
    rng = np.random.default_rng(1)
    c = channels

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    inits: list = []
    per_channel = (c, 1, 1)
    nodes = [
        helper.make_node("Conv", ["x", const("w", rng.standard_normal((c, 3, 3, 3)) * 0.3)], ["c"], name="conv_bn",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", const("scale", rng.uniform(0.5, 1.5, (1, *per_channel)))], ["m"], name="bn_mul"),
        helper.make_node("Add", ["m", const("shift", rng.uniform(-0.5, 0.5, (1, *per_channel)))], ["a"], name="bn_add"),
        helper.make_node("MaxPool", ["a"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["p"], ["pr"], name="pool_relu"),
        helper.make_node("Conv", ["pr", const("w2", rng.standard_normal((c, c, 3, 3)) * 0.1)], ["y"], name="conv_p",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Max", ["y", const("zero_a", np.zeros(()))], ["pos"], name="p_max"),
        helper.make_node("Min", ["y", const("zero_b", np.zeros(()))], ["neg"], name="p_min"),
        helper.make_node("Mul", ["neg", const("slopes", rng.uniform(0.1, 0.3, per_channel))], ["neg_s"], name="p_mul"),
        helper.make_node("Add", ["pos", "neg_s"], ["out"], name="p_add"),
    ]
    graph = helper.make_graph(nodes, "unfolded_batchnorms",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, 16, 16])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(onnx.shape_inference.infer_shapes(model), path)
    return onnx.load(path)


def _kernels(model: onnx.ModelProto, policy: FusionPolicy) -> dict[str, tuple[str, str, str]]:
    """First node -> (kind, op, act) of every kernel."""
    return {sk.nodes[0]: (sk.kernel.kind, sk.kernel.op, sk.kernel.act) for sk in schedule(model, policy).kernels}


def test_an_op_by_a_per_channel_constant_is_named_apart_from_one_by_a_scalar(tmp_path: Path) -> None:
    kernels = _kernels(unfolded_batchnorms(tmp_path / "bn.onnx"), FusionPolicy())
    assert kernels["bn_mul"] == ("act", "Mul(per channel)", "")
    assert kernels["bn_add"] == ("act", "Add(per channel)", "")
    assert kernels["p_max"][:2] == ("act", "Max")  # Max(y, 0): a scalar
    assert kernels["pool_relu"] == ("act", "Relu", "")  # no target fuses it unless it says so


def test_a_pool_and_an_op_by_a_constant_run_the_activation_after_them_where_the_target_says(tmp_path: Path) -> None:
    model = unfolded_batchnorms(tmp_path / "bn.onnx")
    kernels = _kernels(model, FusionPolicy(activation_into_any=True))
    assert kernels["pool"] == ("pool", "MaxPool", "relu") and "pool_relu" not in kernels


def test_u85_chains_ops_by_constants_and_prelu_spelled_as_min_mul_add(tmp_path: Path) -> None:
    """The unfolded BatchNormalization's Mul and Add chain into the conv before them; the spelled PReLU's
    Mul chains into its Min, and its Add into the Max (Vela runs the Add's first input's producer last)."""
    model = unfolded_batchnorms(tmp_path / "bn.onnx")
    kernels = _kernels(model, FusionPolicy(chain_elementwise=True, activation_into_any=True))
    assert kernels["conv_bn"] == ("conv", "", "relu+mul(per channel)+add(per channel)")
    assert kernels["p_min"] == ("act", "Min", "mul(per channel)")
    assert kernels["p_max"] == ("act", "Max", "add")
    assert {"bn_mul", "bn_add", "p_mul", "p_add"}.isdisjoint(kernels)
