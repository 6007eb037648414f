"""In-context profiles: a whole model compiled by the real Vela 5.2.0, its time shared out over its kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from examples.builder import GraphBuilder, Habits
from hwopt.analysis.kernels import PRELU_SLOPES_OVER_1
from hwopt.backends.table_file import read_table
from hwopt.backends.vela import measure_model
from hwopt.backends.vela_context import model_in_context
from hwopt.estimator.in_context import FLOOR_US, in_context_rows
from hwopt.targets import load_target
from tests.backends.test_vela_backend import _one_line_exit_2, hwopt  # the CLI as a user runs it

pytest.importorskip("ethosu.vela")



@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWOPT_CACHE", str(tmp_path_factory.getbasetemp() / "hwopt-cache"))


def tiny_net(size: int = 32, seed: int = 0) -> onnx.ModelProto:
    """Conv, an inverted bottleneck with squeeze-excite and a residual, a nearest Resize, a 1x1 conv and a
    Concat (a U-Net's decoder step)."""
    b = GraphBuilder(f"tiny_{size}", 17, seed, Habits())
    x = b.input("input", 3, size, size)
    y = b.conv_bn_act(x, 16, 3, 2, act="relu", module="stem")
    y = b.inverted_bottleneck(y, 16, 3, 1, hidden=48, act="hardswish", se_squeeze=8, layout="v3", module="block")
    z = b.conv_bn_act(y, 32, 3, 2, act="relu6", module="down")
    z = b.conv_bn_act(b.resize(z, 2.0, "nearest"), 16, 1, act="relu", module="reduce")
    y = b.concat([z, y])
    b.output(b.conv(y, 4, 1, bias=True, module="head"), "output")
    return b.build("tiny in-context test net")


@pytest.mark.parametrize("name", ["ethos-u55-256", "ethos-u85-256"])
def test_kernels_share_out_the_whole_models_vela_time(tmp_path: Path, name: str) -> None:
    target = load_target(name)
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_net(), str(path))
    whole = measure_model(path, target)
    result = model_in_context(path, target)
    assert result.latency_us == pytest.approx(whole.latency_us, rel=1e-9)
    # Vela's per-layer cycles sum to its whole-model cycles, and every NPU layer maps to a scheduled kernel:
    # a wrong name mapping leaves layers unmapped (or a kernel without its layers) and breaks one of these.
    layers = whole.meta["layers"]
    assert sum(layer["cycles"] for layer in layers) == pytest.approx(whole.meta["cycles_total"], rel=1e-6)
    assert result.unmapped_us == 0.0
    assert result.attributed_us == pytest.approx(whole.latency_us, rel=1e-6)
    by_op = {}
    for k in result.kernels:
        by_op.setdefault(k.kernel.kind, []).append(k)
    # Every conv is priced.
    assert all(k.latency_us > 0 and k.layers and not k.no_row for k in by_op["conv"] + by_op["dwconv"])
    assert len(by_op["conv"]) == 8  # stem, expand, SE fc1/fc2, project, down, reduce, head
    # The stride-2 3x3 conv to 32 channels at 16x16 costs more in the model than SE's 1x1 convs at 1x1.
    se = [k for k in by_op["conv"] if k.kernel.h == 1]
    down = [k for k in by_op["conv"] if k.kernel.cout == 32]
    assert se and down and down[0].latency_us > max(k.latency_us for k in se)


@pytest.mark.parametrize("name", ["ethos-u55-256", "ethos-u85-256"])
def test_a_conv_vela_names_after_the_tensor_it_writes_into_is_still_priced(tmp_path: Path, name: str) -> None:
    """A U-Net's last decoder conv is written straight into the Concat's buffer and its layer named after the
    Concat (``/up0/Concat_output_0``, operator Conv2D): its cycles belong to the conv, not to the Concat."""
    from bench.context_models import unet

    result = model_in_context(unet(8, 64, "nearest"), load_target(name))
    assert result.attributed_us == pytest.approx(result.latency_us, rel=1e-6)
    convs = [k for k in result.kernels if k.kernel.kind == "conv"]
    assert len(convs) == 14 and all(k.latency_us > 0 and not k.no_row for k in convs)
    concat = [k for k in result.kernels if k.kernel.kind == "concat"]
    reduce = [k for k in convs if k.kernel.kernel == 1 and k.kernel.h == 64]
    # the concat keeps its own copy rows only: less than the conv that feeds it
    assert len(concat) == 3 and reduce and concat[-1].latency_us < reduce[0].latency_us * 4


def test_rows_are_the_mean_over_occurrences_and_positive(tmp_path: Path) -> None:
    target = load_target("ethos-u55-256")
    paths = []
    for size in (32, 48):
        paths.append(tmp_path / f"tiny{size}.onnx")
        onnx.save(tiny_net(size), str(paths[-1]))
    rows, results = in_context_rows(paths, target)
    assert len(results) == 2
    figures = {}
    for r in results:
        for k in r.kernels:
            figures.setdefault(k.kernel, []).append(k.latency_us)
    assert {m.kernel for m in rows} == {k for k in figures if k.kind not in ("view", "unknown")}
    for m in rows:
        mean = sum(figures[m.kernel]) / len(figures[m.kernel])
        assert m.latency_us == pytest.approx(mean if mean > 0 else FLOOR_US, rel=1e-9)
        assert m.latency_us > 0 and m.meta["in_context"] and m.meta["occurrences"] == len(figures[m.kernel])
    # The SE head's 1x1 convs are the same descriptor at both sizes: one row, two occurrences.
    assert any(m.meta["occurrences"] == 2 for m in rows)


@pytest.mark.slow  # whole models compiled by Vela: 6.2 s on 2 cores at load ~1 (2026-12-07)
def test_profile_in_context_writes_a_table_from_a_folder(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    onnx.save(tiny_net(32), str(models / "a.onnx"))
    onnx.save(tiny_net(48), str(models / "b.onnx"))
    table = tmp_path / "t.csv.gz"
    done = hwopt("profile", "-t", "ethos-u55-256", "--in-context", "--no-examples", "--from", str(models),
                 "-o", str(table), "-q")
    assert done.returncode == 0, done.stderr
    rows = read_table(table)
    assert rows and all(m.backend == "vela" and m.meta["in_context"] for m in rows)
    again = hwopt("profile", "-t", "ethos-u55-256", "--in-context", "--no-examples", "--from", str(models),
                  "-o", str(table))
    assert again.returncode == 0 and "(0 new)" in again.stdout, again.stdout
    assert len(read_table(table)) == len(rows)


def test_profile_in_context_refusals_are_one_line(tmp_path: Path) -> None:
    _one_line_exit_2(hwopt("profile", "-t", "ethos-u55-256", "--in-context", "--no-examples", "--from",
                           str(tmp_path / "missing"), "-o", str(tmp_path / "t.csv")), "no such model or folder")
    _one_line_exit_2(hwopt("profile", "-t", "ethos-u55-256", "--in-context", "--no-examples", "-o",
                           str(tmp_path / "t.csv")), "--in-context needs models")
    _one_line_exit_2(hwopt("profile", "-t", "cpu", "--in-context", "-o", str(tmp_path / "t.csv")),
                     "cannot attribute")


def test_prelu_is_its_own_kernel_as_vela_runs_it() -> None:
    """Vela lowers a PReLU to passes of its own (MUL, MUL, MAXIMUM) with rows of their own in the per-layer
    report, so the Ethos-U targets schedule it apart from the conv before it (``[fusion] separate``), and its
    cycles land on that act kernel, not on the conv; a ReLU stays fused (no row of its own)."""
    b = GraphBuilder("prelu_net", 17, 0, Habits())
    x = b.input("input", 3, 32, 32)
    y = b.conv_bn_act(x, 20, 3, 2, act="prelu", module="stem")
    y = b.conv_bn_act(y, 24, 1, 1, act="relu", module="mid")
    b.output(b.conv(y, 4, 1, bias=True, module="head"), "output")
    model = b.build("conv + PReLU, conv + ReLU")
    target = load_target("ethos-u55-256")
    assert target.fusion.separate == ("prelu",)
    found = model_in_context(model, target)
    kinds = [(k.kernel.kind, k.kernel.act or k.kernel.op) for k in found.kernels if k.kernel.kind != "view"]
    assert kinds == [("conv", ""), ("act", "PRelu"), ("conv", "relu"), ("conv", "")], kinds
    prelu = next(k for k in found.kernels if k.kernel.op == "PRelu")
    assert prelu.latency_us > 0 and not prelu.no_row and prelu.layers
    # Every cycle of the model is given to some kernel (nothing of the PReLU is left on the stem conv's row).
    assert found.attributed_us == pytest.approx(found.latency_us, rel=0.01)
    # npu32 keeps its own policy: the PReLU fuses into the conv there.
    from hwopt.analysis.kernels import schedule
    from hwopt.canonical.canonicalize import canonicalize

    canonical, _ = canonicalize(model, verify=False)
    npu = [(k.kernel.kind, k.kernel.act) for k in schedule(canonical, load_target("npu32").fusion).kernels
           if k.kernel.kind != "view"]
    assert npu[0] == ("conv", "prelu"), npu


def test_a_prelu_pass_named_after_the_add_before_it_is_the_prelus() -> None:
    """Vela lowers a PReLU with a slope over 1 to MINIMUM, MUL, RELU and ADD, and names the MINIMUM pass
    after the PReLU's input: after a residual Add, the Add's tensor.
    Those cycles are the PReLU's (every Prelu row on the PReLU kernels), not the Add's."""
    from hwopt.backends.vela import measure_model

    b = GraphBuilder("add_prelu", 17, 0, Habits())
    x = b.input("input", 3, 32, 32)
    y = b.prelu(b.conv(x, 16, 3, 2, bias=True, module="stem"), module="stem_act")
    for i in range(2):
        with b.scope(f"block{i}"):
            z = b.conv(b.conv(y, 16, 3, 1, groups=16, bias=True, module="dw"), 16, 1, bias=True, module="pw")
            y = b.prelu(b.add(z, y), module="out_act")
    b.output(b.conv(y, 4, 1, bias=True, module="head"), "output")
    model = b.build("residual Adds each followed by a PReLU")
    inits = {t.name: t for t in model.graph.initializer}
    for node in (n for n in model.graph.node if n.op_type == "PRelu"):  # slopes over 1, as trained ones have
        slope = onnx.numpy_helper.to_array(inits[node.input[1]])
        wide = np.linspace(-0.5, 1.5, slope.size).reshape(slope.shape).astype(slope.dtype)
        inits[node.input[1]].CopyFrom(onnx.numpy_helper.from_array(wide, node.input[1]))
    target = load_target("ethos-u85-256")
    found = model_in_context(model, target)
    layers = measure_model(model, target).meta
    per_cycle = 1e6 / layers["clock_hz"]
    prelu_rows = sum(row["cycles"] for row in layers["layers"] if row["operator"] == "Prelu") * per_cycle
    named_after_add = [row for row in layers["layers"] if row["operator"] == "Prelu" and row["cycles"] > 0
                       and any("add" in n.lower() for n in row["onnx_nodes"])]
    assert named_after_add, "Vela no longer names a PReLU pass after the Add before it"
    assert {k.kernel.op for k in found.kernels if k.kernel.kind == "act"} == {PRELU_SLOPES_OVER_1}
    prelus = sum(k.latency_us for k in found.kernels if k.kernel.op == PRELU_SLOPES_OVER_1)
    assert prelus == pytest.approx(prelu_rows, rel=1e-6)
    # Both Adds are chained into the pointwise conv before them (Vela on U85: no cycles of their own).
    assert not [k for k in found.kernels if k.kernel.kind == "eltwise"]
    assert [k.kernel.act for k in found.kernels if "add" in k.kernel.act.split("+")] == ["add", "add"]


def test_u85_chains_the_adds_the_schedule_chains(tmp_path: Path) -> None:
    """Vela on ethos-u85-256 gives cycles to exactly the Adds the schedule leaves as kernels of their own
    (``hwopt.analysis.chaining``); the chained one's row has none, its work is in the conv's row."""
    from tests.analysis.test_chaining import residual_adds

    model = residual_adds(tmp_path / "adds.onnx")
    target = load_target("ethos-u85-256")
    assert target.fusion.chain_elementwise
    rows = measure_model(model, target).meta["layers"]
    paid = sorted({n for row in rows if row["operator"] == "Add" and row["cycles"] > 0 for n in row["onnx_nodes"]})
    assert paid == ["add_pad_first", "add_shared"]
    found = model_in_context(model, target)
    own = sorted(k.nodes[0] for k in found.kernels if k.kernel.kind == "eltwise")
    assert own == paid and all(k.latency_us > 0 for k in found.kernels if k.kernel.kind == "eltwise")
    assert found.attributed_us == pytest.approx(found.latency_us, rel=1e-6)


def _kept_kernels_are_paid(model: onnx.ModelProto, target):
    """Every kernel the schedule keeps has cycles of its own in Vela's report, every ONNX node Vela gives cycles to
    is in one of them, and the kernels sum to Vela's time; (the in-context result, the kernels' first nodes)."""
    found = model_in_context(model, target)
    assert all(k.latency_us > 0 for k in found.kernels), [(k.nodes, k.latency_us) for k in found.kernels]
    paid = {n for row in measure_model(model, target).meta["layers"] if row["cycles"] > 0 for n in row["onnx_nodes"]}
    firsts = {k.nodes[0] for k in found.kernels}
    assert firsts <= paid and found.attributed_us == pytest.approx(found.latency_us, rel=1e-6)
    return found, firsts


@pytest.mark.parametrize("name", ["ethos-u55-256", "ethos-u85-256"])
def test_vela_gives_cycles_to_exactly_the_kernels_the_schedule_keeps(tmp_path: Path, name: str) -> None:
    """tf2onnx's unfolded BatchNormalizations, a ReLU after a MaxPool and a PReLU spelled as Max/Min/Mul/Add
    (``tests.analysis.test_chaining.unfolded_batchnorms``): on both configurations the ReLU runs in the
    pool's pass; on U85 the ops by constants and the spelled PReLU's Mul and Add chain. Every kernel the
    schedule keeps has cycles of its own in Vela's report, and every ONNX node Vela gives cycles to is in
    one of them."""
    from tests.analysis.test_chaining import unfolded_batchnorms

    firsts = _kept_kernels_are_paid(unfolded_batchnorms(tmp_path / "bn.onnx"), load_target(name))[1]
    chained = {"bn_mul", "bn_add", "p_mul", "p_add"}
    assert (chained & firsts == set()) if name == "ethos-u85-256" else chained <= firsts
    assert "pool_relu" not in firsts


def test_a_pass_vela_writes_to_an_internal_tensor_is_the_next_rows_op(tmp_path: Path) -> None:
    """Vela runs a Transpose of a large map in two passes, the first writing a tensor named "#N" that maps to no
    ONNX node: its cycles are the Transpose's, not the kernel's before it (here a Slice that crops a
    ConvTranspose's output; a Keras heatmap head as tf2onnx writes it)."""
    from bench.context_models import keras_upsampler

    model = keras_upsampler(8, 64, 2)
    target = load_target("ethos-u55-256")
    rows = [r for r in measure_model(model, target).meta["layers"] if r["operator"] == "Transpose"]
    assert any(not r["onnx_nodes"] for r in rows), "Vela no longer splits the Transpose into passes"
    found = model_in_context(model, target)
    per_cycle = 1e6 / measure_model(model, target).meta["clock_hz"]
    transposes = sum(k.latency_us for k in found.kernels if k.kernel.op == "Transpose")
    assert transposes == pytest.approx(sum(r["cycles"] for r in rows) * per_cycle, rel=1e-6)
    assert found.unmapped_us == 0 and found.attributed_us == pytest.approx(found.latency_us, rel=1e-6)


def _rows_model(path: Path) -> onnx.ModelProto:
    """Three places where Vela's per-layer report names a row after another op's tensor: two 1x1 convs of equal
    MACs feeding a Concat (Vela writes one of them straight into the Concat's output, its row named after
    the Concat), a MaxPool read only by a channel Pad (written into the padded tensor, its row named after
    the Pad), and a Softmax after a Gemm (on U85 its passes are named after the Gemm's output)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)

    def weight(name: str, *shape: int) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name))
        return name

    inits: list = []
    nodes = [
        helper.make_node("Conv", ["x", weight("wa", 16, 16, 1, 1)], ["a"], name="branch_a"),
        helper.make_node("Conv", ["x", weight("wb", 16, 16, 1, 1)], ["b"], name="branch_b"),
        helper.make_node("Relu", ["b"], ["b_relu"], name="relu_b"),
        helper.make_node("Concat", ["a", "b_relu"], ["cat"], name="concat", axis=1),
        helper.make_node("MaxPool", ["cat"], ["pooled"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Pad", ["pooled", weight_int(inits, "pads", [0, 0, 0, 0, 0, 16, 0, 0])], ["padded"],
                         name="channel_pad"),
        helper.make_node("Conv", ["cat", weight("wc", 48, 32, 3, 3)], ["c"], name="down", strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["padded", "c"], ["sum"], name="shortcut_add"),
        helper.make_node("GlobalAveragePool", ["sum"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", weight("wd", 10, 48)], ["logits"], name="dense", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(onnx.shape_inference.infer_shapes(model), path)
    return onnx.load(path)


def weight_int(inits: list, name: str, values: list[int]) -> str:
    from onnx import numpy_helper

    inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
    return name


@pytest.mark.parametrize("name", ["ethos-u55-256", "ethos-u85-256"])
def test_rows_named_after_another_ops_tensor_go_to_the_op_that_ran_them(tmp_path: Path, name: str) -> None:
    model = _rows_model(tmp_path / "rows.onnx")
    target = load_target(name)
    found = model_in_context(model, target)
    by_first = {k.nodes[0]: k for k in found.kernels}
    for kernel in ("branch_a", "branch_b", "pool", "softmax", "dense"):
        assert by_first[kernel].latency_us > 0, (kernel, [(k.nodes, k.latency_us, k.layers) for k in found.kernels])
    # each conv gets its own MACs' worth, not both in one
    rows = measure_model(model, target).meta["layers"]
    conv_rows = sorted(r["cycles"] for r in rows if r["operator"] == "Conv2D" and r["cycles"] > 0
                       and r["macs"] == 16 * 16 * 16 * 16)
    per_cycle = 1e6 / measure_model(model, target).meta["clock_hz"]
    assert sorted(by_first[k].latency_us / per_cycle for k in ("branch_a", "branch_b")) == pytest.approx(conv_rows)
    assert found.attributed_us == pytest.approx(found.latency_us, rel=1e-6)


def standalone_batchnorm(path: Path, channels: int = 16) -> onnx.ModelProto:
    """conv -> ReLU -> a BatchNormalization op that cannot fold (the captcha CNN of set F, tf2onnx) -> conv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    c = channels
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (
        ("w", rng.standard_normal((c, 3, 3, 3)) * 0.3), ("gamma", rng.uniform(0.5, 1.5, c)),
        ("beta", rng.uniform(-0.5, 0.5, c)), ("mean", rng.uniform(-0.2, 0.2, c)), ("var", rng.uniform(0.5, 2.0, c)),
        ("w2", rng.standard_normal((c, c, 3, 3)) * 0.1))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("BatchNormalization", ["r", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
             helper.make_node("Conv", ["bn", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "standalone_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 32, 32])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(onnx.shape_inference.infer_shapes(model), path)
    return onnx.load(path)


@pytest.mark.parametrize("name", ["ethos-u55-256", "ethos-u85-256"])
def test_a_standalone_batchnorm_is_chained_on_u85_and_paid_on_u55(tmp_path: Path, name: str) -> None:
    """The writer lowers a BatchNormalization it cannot fold to a MUL and an ADD by per-channel constants; U85
    chains both into the conv before them (``chaining.LOWERED_CHAINS``), U55 runs them as passes of their own.
    The schedule keeps exactly the kernels Vela gives cycles to."""
    found, firsts = _kept_kernels_are_paid(standalone_batchnorm(tmp_path / "bn.onnx"), load_target(name))
    if name == "ethos-u85-256":
        assert "bn" not in firsts and "batchnormalization" in next(k for k in found.kernels if k.nodes[0] == "conv").kernel.act
    else:
        assert "bn" in firsts


def test_a_dilated_convs_row_carries_its_dilation_and_vela_prices_it_apart(tmp_path: Path) -> None:
    """Vela splits a conv of dilation over 2 into dilation^2 sub-grid convs (regor's HandleDilation), so its cost
    is not the undilated conv's: the in-context row is keyed by ``Kernel.dilation`` and the table round-trips it."""
    from hwopt.backends.table_file import write_table

    def atrous(dilation: int) -> onnx.ModelProto:
        b = GraphBuilder(f"atrous_{dilation}", 13, 0, Habits())
        x = b.input("input", 3, 48, 48)
        y = b.conv_bn_act(x, 16, 3, 2, act="relu", module="stem")
        b.output(b.relu(b.conv(y, 32, 3, dilation=dilation, bias=True, module="aspp")), "output")
        return b.build("atrous test net")

    target = load_target("ethos-u55-256")
    found = {}
    for d in (1, 6):
        path = tmp_path / f"atrous_{d}.onnx"
        onnx.save(atrous(d), str(path))
        rows, _ = in_context_rows([path], target)
        (row,) = [r for r in rows if r.kernel.cout == 32]
        found[d] = row
    assert found[1].kernel.dilation == 1 and found[6].kernel.dilation == 6
    assert found[6].latency_us > 2 * found[1].latency_us  # 36 passes, each with the weights
    write_table(tmp_path / "t.csv.gz", [found[6]])
    assert read_table(tmp_path / "t.csv.gz")[0].kernel.dilation == 6


@pytest.mark.parametrize("nhwc", [False, True])
def test_the_kernel_that_reads_the_graph_input_is_marked(tmp_path: Path, nhwc: bool) -> None:
    """An NCHW export's stem conv streams the model input itself; an NHWC export's input Transpose does, and the
    stem reads the copy (ethos-u65-256: 4.5 ms against 1.3 ms for the same 7x7 conv; ``Kernel.graph_input``)."""
    b = GraphBuilder(f"stem_{nhwc}", 13, 0, Habits())
    x = b.input_nhwc("input", 3, 64, 64) if nhwc else b.input("input", 3, 64, 64)
    y = b.conv_bn_act(x, 16, 7, 2, act="relu", module="stem")
    b.output(b.conv_bn_act(y, 16, 3, 1, act="relu", module="c2"), "output")
    found = model_in_context(b.build("stem test net"), load_target("ethos-u65-256"))
    marked = [k.kernel for k in found.kernels if k.kernel.graph_input]
    assert [k.kind for k in marked] == (["layout"] if nhwc else ["conv"])
    assert all(k.latency_us > 0 for k in found.kernels)


def test_a_transposed_conv_vela_writes_into_a_concat_is_priced() -> None:
    """Vela names a TransposeConv2D that writes straight into a Concat's output after the Concat (a U-Net's last
    decoder step; fastmrz's MRZ U-Net: 67 M cycles on ethos-u55-256): its cycles are the ConvTranspose's, not the
    Concat's."""
    from bench.context_models import unet

    found = model_in_context(unet(8, 32, "convtranspose"), load_target("ethos-u55-256"))
    transposed = [k for k in found.kernels if k.kernel.op == "ConvTranspose"]
    assert len(transposed) == 3 and all(k.latency_us > 0 for k in transposed), [(k.nodes, k.latency_us) for k in transposed]
    assert found.attributed_us == pytest.approx(found.latency_us, rel=1e-6)
