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
