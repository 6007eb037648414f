"""Attention and matrix kernels: how the schedule describes a transformer block, on a real-shaped graph.

The graph is an SVTR block as paddle2onnx writes PP-OCRv4's recogniser (opset 12, 40 tokens of 120
features, 8 heads of 15): a layer norm spelled out as ReduceMean/Sub/Pow/Sqrt/Div, the QKV projection as
MatMul + Add, the heads split by Reshape/Transpose, Q @ K^T, Softmax, P @ V, the output projection; then
a second layer norm and the MLP with SiLU; at opset 17 the second norm is the LayerNormalization op and
the MLP's activation GELU as torch's legacy exporter spells it with Erf. It is written to disk,
canonicalised by onnxruntime (whose basic optimiser turns MatMul + Add into a Gemm over the 40 token
rows) and scheduled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.backends.kernel_models import kernel_model
from hwopt.backends.scalesim import LayerSpec, layer_for
from hwopt.backends.vector_unit import VectorUnit
from hwopt.canonical.canonicalize import load_canonical
from hwopt.estimator.features import FEATURES, features
from hwopt.estimator.memory import param_elements
from hwopt.analysis.kernels import schedule
from hwopt.analysis.kernel import Kernel
from hwopt.estimator.profile import attention_kernels
from hwopt.targets import load_target

TOKENS, WIDTH, HEADS = 40, 120, 8
HEAD = WIDTH // HEADS


def _layer_norm(node, const, x: str, name: str) -> str:
    """A layer norm over the last axis as paddle2onnx spells it (opset 12 has no LayerNormalization)."""
    mean = node("ReduceMean", [x], f"{name}.mean", axes=[-1], keepdims=1)
    d = node("Sub", [x, mean], f"{name}.d")
    var = node("ReduceMean", [node("Pow", [d, const(f"{name}.two", np.array(2.0, np.float32))], f"{name}.sq")],
               f"{name}.var", axes=[-1], keepdims=1)
    std = node("Sqrt", [node("Add", [var, const(f"{name}.eps", np.array(1e-5, np.float32))], f"{name}.ve")],
               f"{name}.std")
    y = node("Div", [d, std], f"{name}.norm")
    y = node("Mul", [y, const(f"{name}.g", np.ones(WIDTH, np.float32))], f"{name}.scaled")
    return node("Add", [y, const(f"{name}.b", np.zeros(WIDTH, np.float32))], f"{name}.out")


def _svtr_block(path: Path, opset: int = 12) -> Path:
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def linear(x: str, cin: int, cout: int, name: str) -> str:
        w = const(f"{name}.w", (rng.standard_normal((cin, cout)) / np.sqrt(cin)).astype(np.float32))
        b = const(f"{name}.b", np.zeros(cout, np.float32))
        return node("Add", [node("MatMul", [x, w], f"{name}.mm"), b], f"{name}.out")

    x = node("Reshape", ["x", const("flat", np.array([1, WIDTH, TOKENS], np.int64))], "flat_x")
    t = node("Transpose", [x], "tokens", perm=[0, 2, 1])
    y = _layer_norm(node, const, t, "ln")
    qkv = linear(y, WIDTH, 3 * WIDTH, "qkv")
    qkv = node("Reshape", [qkv, const("heads", np.array([1, TOKENS, 3, HEADS, HEAD], np.int64))], "qkv.heads")
    qkv = node("Transpose", [qkv], "qkv.t", perm=[2, 0, 3, 1, 4])  # [3, 1, 8, 40, 15]
    q, k, v = (node("Gather", [qkv, const(f"i{i}", np.array(i, np.int64))], f"qkv.{n}", axis=0)
               for i, n in enumerate("qkv"))
    q = node("Mul", [q, const("scale", np.array(HEAD ** -0.5, np.float32))], "q.scaled")
    kt = node("Transpose", [k], "k.t", perm=[0, 1, 3, 2])
    attn = node("Softmax", [node("MatMul", [q, kt], "qk")], "attn", axis=-1)
    o = node("Transpose", [node("MatMul", [attn, v], "av")], "av.t", perm=[0, 2, 1, 3])
    o = node("Reshape", [o, const("merge", np.array([1, TOKENS, WIDTH], np.int64))], "av.merged")
    x1 = node("Add", [t, linear(o, WIDTH, WIDTH, "proj")], "res1")
    if opset >= 17:
        y = node("LayerNormalization", [x1, const("ln2.g", np.ones(WIDTH, np.float32)),
                                        const("ln2.b", np.zeros(WIDTH, np.float32))], "ln2", axis=-1, epsilon=1e-5)
    else:
        y = _layer_norm(node, const, x1, "ln2")
    h = linear(y, WIDTH, 2 * WIDTH, "fc1")
    if opset >= 17:  # GELU as torch's legacy exporter spells it
        g = node("Add", [node("Erf", [node("Div", [h, const("sqrt2", np.array(np.sqrt(2), np.float32))], "g.div")],
                              "g.erf"), const("one", np.array(1.0, np.float32))], "g.add")
        h = node("Mul", [node("Mul", [h, g], "g.mul"), const("half", np.array(0.5, np.float32))], "fc1.gelu")
    else:  # SiLU as paddle2onnx writes PP-OCRv4's
        h = node("Mul", [h, node("Sigmoid", [h], "fc1.sig")], "fc1.silu")
    node("Add", [x1, linear(h, 2 * WIDTH, WIDTH, "fc2")], "y")
    graph = helper.make_graph(nodes, "svtr_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  [1, WIDTH, 1, TOKENS])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, TOKENS, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module", params=[12, 17], ids=["opset12-spelled-out", "opset17-LayerNormalization"])
def block(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, onnx.ModelProto]:
    path = _svtr_block(tmp_path_factory.mktemp("attention") / "svtr_block.onnx", request.param)
    _, canonical, _ = load_canonical(path)  # verified against the original by onnxruntime
    return request.param, canonical


def test_an_attention_block_is_scheduled_as_its_matrix_kernels(block) -> None:
    opset, canonical = block
    sched = schedule(canonical).kernels
    kernels = [sk.kernel for sk in sched]
    if opset == 12:  # onnxruntime's basic optimiser leaves paddle2onnx's spelling (its transpose optimiser
        # sinks the first norm's Transpose into the chain, as in the real export): the schedule fuses it
        ops = {n.name: n.op_type for n in canonical.graph.node}
        for sk in (sk for sk in sched if sk.kernel.kind == "norm"):
            chain = sorted(ops[name] for name in sk.nodes if ops[name] != "Transpose")
            assert chain == sorted(["ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "Add"])
    by_kind = {kind: [k for k in kernels if k.kind == kind] for kind in ("gemm", "softmax", "norm", "unknown")}
    assert not by_kind["unknown"]
    # both layer norms (spelled out, and the opset-17 op) are one kernel each: 40 rows of 120 values
    assert [(k.h, k.cout) for k in by_kind["norm"]] == [(TOKENS, WIDTH)] * 2
    assert not [k for k in kernels if k.op in ("ReduceMean", "Pow", "Sqrt")]
    # the softmax runs over the keys: 8 heads x 40 query rows of 40 values
    assert [(k.h, k.cout) for k in by_kind["softmax"]] == [(HEADS * TOKENS, TOKENS)]
    products = [(k.groups, k.batch, k.cin, k.cout, k.activation_operand) for k in by_kind["gemm"]]
    assert products == [  # the projections over all 40 token rows (not 1: the Gemm's rows are per sample)
        (1, TOKENS, WIDTH, 3 * WIDTH, False),
        (HEADS, HEADS * TOKENS, HEAD, TOKENS, True),  # Q @ K^T per head
        (HEADS, HEADS * TOKENS, TOKENS, HEAD, True),  # P @ V per head
        (1, TOKENS, WIDTH, WIDTH, False),
        (1, TOKENS, WIDTH, 2 * WIDTH, False),
        (1, TOKENS, 2 * WIDTH, WIDTH, False),
    ]
    acts = [k for k in kernels if k.kind == "act" and k.op in ("Gelu", "Sigmoid")]
    assert [(k.op, k.cout) for k in acts] == [("Gelu" if opset >= 17 else "Sigmoid", TOKENS * 2 * WIDTH)]
    if opset >= 17:  # the five nodes of the Erf spelling are one kernel
        assert [len(sk.nodes) for sk in sched if sk.kernel.op == "Gelu"] == [5]
    true_macs = TOKENS * WIDTH * (3 * WIDTH + WIDTH + 2 * WIDTH + 2 * WIDTH) + 2 * HEADS * TOKENS * TOKENS * HEAD
    assert sum(k.macs for k in by_kind["gemm"]) == true_macs
    assert [k.describe() for k in by_kind["gemm"][1:3]] == ["matmul 8x(40x15 @ 15x40)", "matmul 8x(40x40 @ 40x15)"]
    # parameters: the projections' weights and biases; attention's products have none
    assert sum(param_elements(k) for k in by_kind["gemm"]) == sum(
        cin * cout + cout for cin, cout in ((120, 360), (120, 120), (120, 240), (240, 120)))


def test_onnxruntime_runs_the_spelled_out_layer_norm_as_one_kernel(block, tmp_path: Path) -> None:
    """Why it is one ``norm`` kernel (and GELU one ``act``): onnxruntime's full optimisation fuses the chains."""
    _, canonical = block
    assert "ReduceMean" in [n.op_type for n in canonical.graph.node] or "LayerNormalization" in [
        n.op_type for n in canonical.graph.node]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(canonical.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    # (the norm whose Transpose was sunk into it keeps its mean and subtraction, then runs the rest as a
    # SimplifiedLayerNormalization: the kernel describes it as one normalisation all the same)
    assert ops.count("LayerNormalization") + ops.count("SimplifiedLayerNormalization") == 2
    assert not {"Pow", "Sqrt", "Div", "Erf"} & set(ops)  # (GELU's Erf spelling runs as one Gelu kernel too)


def test_the_measurement_models_compute_the_kernels(block) -> None:
    """The cpu backend times each attention kernel as a real model computing exactly it."""
    _, canonical = block
    kernels = {k.describe(): k for k in (sk.kernel for sk in schedule(canonical).kernels)}
    rng = np.random.default_rng(1)
    for name in ("matmul 8x(40x15 @ 15x40)", "softmax 320x40", "norm(LayerNormalization) 40x120"):
        model = kernel_model(kernels[name])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
                 for i in model.graph.input}
        (out,) = session.run(None, feeds)
        if name.startswith("matmul"):
            np.testing.assert_allclose(out, feeds["x"] @ feeds["x1"], rtol=1e-4, atol=1e-4)
            assert out.shape == (1, HEADS, TOKENS, TOKENS)
        elif name.startswith("softmax"):
            np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)
            assert out.shape == (1, HEADS * TOKENS, TOKENS)
        else:
            x = feeds["x"]
            expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
            np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)


def test_npu32_maps_the_heads_onto_the_array_and_the_norm_onto_the_vector_unit() -> None:
    qk = Kernel("gemm", HEAD, TOKENS, groups=HEADS, inputs=2, batch=HEADS * TOKENS, op="MatMul")
    assert layer_for(qk) == (LayerSpec(TOKENS, 1, 1, 1, HEAD, TOKENS, 1), HEADS)  # one head simulated, x8
    target = load_target("npu32")
    unit = VectorUnit(target.vector_unit, target.dtype_bytes)
    norm = Kernel("norm", WIDTH, WIDTH, TOKENS, 1, TOKENS, 1, op="LayerNormalization")
    elements = TOKENS * WIDTH
    cost = unit.cost(norm)
    assert cost.compute_cycles == elements // 32 * target.vector_unit["norm"]
    assert cost.dram_bytes == 2 * elements
    # The features see a head's product (40 rows, 15 -> 40), eight times: as eight mapped layers.
    row = dict(zip(FEATURES, features([qk], 32, 1)[0]))
    assert (row["row_folds"], row["col_folds"], row["log_folds"]) == (1, 2, pytest.approx(np.log1p(16)))


def test_every_kernel_of_the_attention_sweep_family_builds_its_measurement_model() -> None:
    family = attention_kernels()
    assert {k.kind for k in family} >= {"gemm", "softmax", "norm", "eltwise", "act", "layout"}
    assert any(k.groups == 64 * 3 for k in family)  # Swin's 64 windows x 3 heads
    for k in family:
        if k.kind in ("gemm", "softmax", "norm"):
            onnx.checker.check_model(kernel_model(k))


def test_a_gemm_over_tokens_counts_the_rows_of_one_sample(tmp_path: Path) -> None:
    """A model of 2 samples: onnxruntime reshapes [2, 40, 120] to [80, 120] for its Gemm; figures stay per sample."""
    w = numpy_helper.from_array(np.ones((WIDTH, 3 * WIDTH), np.float32) / WIDTH, "w")
    b = numpy_helper.from_array(np.zeros(3 * WIDTH, np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"), helper.make_node("Add", ["mm", "b"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, TOKENS, WIDTH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, TOKENS, 3 * WIDTH])
    graph = helper.make_graph(nodes, "tokens", [x], [y], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "tokens.onnx")
    _, canonical, _ = load_canonical(tmp_path / "tokens.onnx")
    assert "Gemm" in [n.op_type for n in canonical.graph.node]  # what onnxruntime's basic optimiser makes of it
    (gemm,) = [sk.kernel for sk in schedule(canonical).kernels if sk.kernel.kind == "gemm"]
    assert (gemm.batch, gemm.cin, gemm.cout, gemm.groups) == (TOKENS, WIDTH, 3 * WIDTH, 1)
