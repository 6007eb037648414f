"""hwopt on real exporters' output.

``tests/data/ch_ppocr_mobile_v2.0_cls_infer.onnx`` is a real paddle2onnx export
(see tests/data/README.md). The PP-OCRv4 models (PP-LCNetV3 backbone) are too
large to ship, so the paddle2onnx patterns they broke hwopt with are rebuilt
here node for node in a small hand-built graph:

- dynamic batch written as ``dim_value: -1``;
- ``Conv -> Mul(scale, conv) -> Add(conv, bias)`` with 1-element constants
  after every conv (a learnable affine block) that onnxruntime does not fold;
- ``hardswish -> Mul(scale) -> Add(bias)`` before the next conv;
- stacks of depthwise-separable layers, where each pointwise conv is the
  project of one IBN-shaped block and the expand of the next;
- symbolic output dims, which must survive ``--input-shape``.

Three small torch dynamo exports (``tests/data/torch_dynamo_*.onnx``: opset 20,
external data, ``Reshape(x, [1, C])`` for flatten, ``Resize`` to constant sizes,
SiLU inside SE) and a TensorFlow Lite model converted by tflite2onnx are real
files too; the dynamo patterns without a file (``optimize=False`` biases, a
dynamic batch that the graph does not honour) are rebuilt in small graphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.rewrites.apply import apply_steps, check_written_model
from hwopt.calibration.samples import random_inputs
from hwopt.canonical.canonicalize import canonicalize, load_canonical
from hwopt.io.model import InputShape, load_model, save_model
from hwopt.rewrites.ruleset import parse_rule_option
from hwopt.analysis.sites import Analysis

DATA = Path(__file__).parent / "data"
PADDLE_CLS = DATA / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
CLS_SHAPE = [InputShape("x", (1, 3, 48, 192))]


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _apply(original, canonical, rules: list[str], samples: int = 4):
    calibration = random_inputs(original, samples, 1)
    evaluation = random_inputs(original, 2, 2)
    return apply_steps(original, canonical, [parse_rule_option(r) for r in rules], calibration, evaluation)


def _round_trip(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    save_model(model, path)
    loaded = load_model(path)
    onnx.checker.check_model(loaded, full_check=True)
    return loaded


# -- the real paddle2onnx export ------------------------------------------------------------


def test_paddle_minus_one_batch_dim_takes_input_shape() -> None:
    model = load_model(PADDLE_CLS)
    assert model.producer_name == "PaddlePaddle"
    # paddle2onnx writes the dynamic batch as dim_value -1: it must read as unknown, not as fixed.
    assert not model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")
    original, canonical, report = load_canonical(PADDLE_CLS, CLS_SHAPE)
    assert _dims(original.graph.input[0]) == [1, 3, 48, 192]
    assert report.nodes_before == 566 and report.nodes_after < 200
    assert report.removed("BatchNormalization") == 35


def test_paddle_cls_sites_and_exact_rules(tmp_path: Path) -> None:
    original, canonical, _ = load_canonical(PADDLE_CLS, CLS_SHAPE)
    analysis = Analysis(canonical)
    blocks = analysis.of_kind("ibn")
    assert len(blocks) == 11  # MobileNetV3-small: every bneck block
    assert all(b.target.fusable for b in blocks)  # PP-OCR cls: every bneck has an expand conv
    assert len(analysis.of_kind("dw")) == 11
    result = _apply(original, canonical, ["dw-to-dense", "align-channels:p=32,mode=pad"])
    assert result.exact and all(step.applied for step in result.steps)
    assert result.final.exact
    written = _round_trip(result.model, tmp_path / "cls_exact.onnx")
    check_written_model(original, written)
    assert not any(n.op_type == "Conv" and _group(n) > 1 for n in written.graph.node)


def test_paddle_cls_fuse_ibn_and_depth_multiplier(tmp_path: Path) -> None:
    original, canonical, _ = load_canonical(PADDLE_CLS, CLS_SHAPE)
    result = _apply(original, canonical, ["fuse-ibn@ibn1,ibn4", "depth-multiplier:ratio=0.75@ibn9"])
    assert [len(step.applied) for step in result.steps] == [2, 1]
    assert not result.exact and result.final.worst_cosine > 0.5
    written = _round_trip(result.model, tmp_path / "cls_fused.onnx")
    check_written_model(original, written)


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


# -- paddle2onnx PP-LCNetV3 patterns, rebuilt ------------------------------------------------


class _LCNetBuilder:
    """paddle2onnx's way of writing PP-LCNetV3 layers (as in PP-OCRv4 det/rec)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, op: str) -> str:
        self.count += 1
        return f"p2o.{op}.{self.count}"

    def const(self, value, shape=None) -> str:
        name = self._name("const")
        array = np.asarray(value, dtype=np.float32)
        self.inits.append(numpy_helper.from_array(array.reshape(shape) if shape is not None else array, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        name = self._name(op)
        self.nodes.append(helper.make_node(op, inputs, [name + ".out"], name=name, **attrs))
        return name + ".out"

    def affine(self, x: str, scale_first: bool = True) -> str:
        scale = self.const([self.rng.uniform(0.5, 1.5)], (1,))
        bias = self.const([self.rng.uniform(-0.3, 0.3)], (1,))
        y = self.node("Mul", [scale, x] if scale_first else [x, scale])
        return self.node("Add", [y, bias])

    def hardswish(self, x: str) -> str:
        clipped = self.node("Clip", [self.node("Add", [x, self.const(3.0)]), self.const(0.0), self.const(6.0)])
        return self.node("Div", [self.node("Mul", [x, clipped]), self.const(6.0)])

    def conv(self, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, group: int = 1) -> str:
        weight = self.rng.normal(0, np.sqrt(2.0 / (cin // group * k * k)), (cout, cin // group, k, k))
        bias = self.rng.normal(0, 0.1, cout)
        return self.node("Conv", [x, self.const(weight), self.const(bias)], kernel_shape=[k, k],
                         strides=[stride, stride], pads=[k // 2] * 4, group=group)

    def conv_act(self, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, group: int = 1) -> str:
        # conv -> learnable affine -> hardswish -> learnable affine
        return self.affine(self.hardswish(self.affine(self.conv(x, cin, cout, k, stride, group))), False)

    def model(self) -> onnx.ModelProto:
        x = self.conv_act("x", 3, 8, 3, 2)
        for cin, cout, stride in ((8, 16, 1), (16, 16, 1), (16, 24, 2)):
            x = self.conv_act(x, cin, cin, 3, stride, group=cin)  # depthwise
            x = self.conv_act(x, cin, cout)  # pointwise
        y = self.conv(self.node("GlobalAveragePool", [x]), 24, 10)
        self.nodes[-1].output[0] = "out"
        graph = helper.make_graph(
            self.nodes, "lcnet",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "h", "w"])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 10, 1, 1])],
            self.inits,
        )
        assert y
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], producer_name="PaddlePaddle")
        model.ir_version = 8
        return model


LC_SHAPE = [InputShape("x", (1, 3, 32, 32))]


@pytest.fixture()
def lcnet(tmp_path: Path) -> Path:
    path = tmp_path / "lcnet.onnx"
    onnx.save(_LCNetBuilder().model(), path)
    return path


def test_conv_affine_is_folded_and_exact(lcnet: Path) -> None:
    original, canonical, report = load_canonical(lcnet, LC_SHAPE)
    convs = {out: n for n in canonical.graph.node if n.op_type == "Conv" for out in n.output}
    # No Mul by a constant is left directly after a conv: scale and bias were folded into it.
    # (The Add of hardswish's x + 3 stays: the conv output has a second use.)
    inits = {t.name for t in canonical.graph.initializer}
    for node in canonical.graph.node:
        if node.op_type == "Mul" and any(i in convs for i in node.input):
            assert not any(i in inits for i in node.input), node.name
    # 7 conv affines folded (a Mul and an Add each), and 7 hard-swishes paddle2onnx spells
    # (x * relu6(x + 3)) / 6 rewritten as x * HardSigmoid(x) (the Add and the Clip gone each).
    assert report.nodes_after == report.nodes_before - 2 * 7 - 2 * 7
    assert "rewrote 7 relu6(x + 3) / 6 as HardSigmoid" in report.notes
    assert report.max_rel_error < 1e-4
    # The constants it replaced are gone, not left behind as unused initializers.
    used = {i for n in canonical.graph.node for i in n.input}
    assert all(t.name in used for t in canonical.graph.initializer)


def test_affine_after_activation_and_dw_separable_blocks(lcnet: Path) -> None:
    _, canonical, _ = load_canonical(lcnet, LC_SHAPE)
    blocks = [s.target for s in Analysis(canonical).of_kind("ibn")]
    assert len(blocks) == 3
    assert [b.fusable for b in blocks] == [False, True, False]
    assert [a.kind for a in blocks[1].expand_acts] == ["hardswish", "affine", "affine"]
    assert [a.kind for a in blocks[1].depthwise_acts] == ["hardswish", "affine", "affine"]
    # ibn2's expand conv is ibn1's project: a conv belongs to one fusable block only.
    assert "ibn1" in blocks[2].describe()
    assert blocks[2].input is blocks[2].depthwise.inputs[0]


def test_all_rules_on_lcnet_keep_symbolic_output(lcnet: Path, tmp_path: Path) -> None:
    original, canonical, _ = load_canonical(lcnet, LC_SHAPE)
    # Shape inference knows the output is 1x10x1x1, but the declared signature stays symbolic.
    assert _dims(canonical.graph.output[0]) == ["n", 10, 1, 1]
    exact = _apply(original, canonical, ["dw-to-dense", "align-channels:p=32,mode=pad"])
    assert exact.exact and exact.final.exact
    everything = _apply(original, canonical, [
        "fuse-ibn", "depth-multiplier:ratio=0.75", "dw-to-dense", "align-channels:p=32,mode=pad",
    ])
    assert everything.steps[0].applied and everything.steps[2].applied
    written = _round_trip(everything.model, tmp_path / "lcnet_all.onnx")
    check_written_model(original, written)
    assert _dims(written.graph.output[0]) == ["n", 10, 1, 1]
    session = ort.InferenceSession(str(tmp_path / "lcnet_all.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.ones((1, 3, 32, 32), np.float32)})
    assert out.shape == (1, 10, 1, 1) and np.isfinite(out).all()


def test_canonicalize_folds_per_channel_and_sub_div() -> None:
    b = _LCNetBuilder(1)
    y = b.conv("x", 3, 4, 3)
    y = b.node("Div", [b.node("Sub", [y, b.const(np.arange(4), (1, 4, 1, 1))]), b.const(2.0)])
    y = b.node("Mul", [b.const(np.linspace(0.5, 2, 4), (4, 1, 1)), y])
    # c - x is not affine in the way a conv bias is: only x - c and x / c fold.
    b.node("Sub", [b.const(1.0), y])
    b.nodes[-1].output[0] = "out"
    graph = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    canonical, report = canonicalize(model)
    assert [n.op_type for n in canonical.graph.node] == ["Conv", "Sub"]
    assert report.max_rel_error < 1e-4


# -- torch dynamo exports (torch.onnx.export(..., dynamo=True)), see tests/data/README.md ----------

MNV3_DYNAMO = DATA / "torch_dynamo_mobilenet_v3_small_w025.onnx"  # weights in the .onnx.data next to it
EFFNET_DYNAMO = DATA / "torch_dynamo_efficientnet_b0_w025.onnx"
LRASPP_DYNAMO = DATA / "torch_dynamo_lraspp_mobilenet_v3_large_w025.onnx"


def test_dynamo_mobilenet_v3_external_data_and_flatten(tmp_path: Path) -> None:
    original, canonical, report = load_canonical(MNV3_DYNAMO)
    assert original.producer_name == "pytorch" and original.opset_import[0].version >= 18
    # torch.flatten is exported as Reshape(x, [1, 144]): canonically Flatten, which names neither
    # the batch nor the channel count, so the classifier's input group can be aligned.
    assert report.removed("Reshape") == 1 and report.ops_after["Flatten"] == 1
    analysis = Analysis(canonical)
    blocks = [s.target for s in analysis.of_kind("ibn")]
    assert len(blocks) == 11 and sum(b.se is not None for b in blocks) == 9  # every bneck, SE where torchvision has it
    assert [b.fusable for b in blocks] == [False] + [True] * 10
    last = analysis.of_kind("ch")[-1].target
    assert last.resizable and last.channels == 144 and last.consumers[0].node.op == "Gemm"
    exact = _apply(original, canonical, ["dw-to-dense", "align-channels:p=32,mode=pad"])
    assert exact.exact and exact.final.exact and len(exact.steps[1].applied) > 0
    written = _round_trip(exact.model, tmp_path / "mnv3_exact.onnx")
    check_written_model(original, written)
    inits = {t.name: t for t in written.graph.initializer}
    gemm = next(n for n in written.graph.node if n.op_type == "Gemm" and n.input[0] == last.consumers[0].input.name)
    assert list(inits[gemm.input[1]].dims) == [256, 160]  # 144 -> 160 input features, padded with zeros
    fused = _apply(original, canonical, ["fuse-ibn@ibn1,ibn4", "depth-multiplier:ratio=0.5@ibn9"])
    assert [len(step.applied) for step in fused.steps] == [2, 1] and not fused.exact
    check_written_model(original, _round_trip(fused.model, tmp_path / "mnv3_fused.onnx"))


def test_dynamo_flatten_runs_calibration_batched() -> None:
    from hwopt.calibration.samples import OrtRunner

    original, canonical, _ = load_canonical(MNV3_DYNAMO)
    # The export fixes batch 1; with its Reshape([1, 144]) a free batch cannot run, with Flatten it can.
    assert OrtRunner(original).fixed_batch
    assert not OrtRunner(canonical).fixed_batch


def test_dynamo_efficientnet_silu_se_blocks(tmp_path: Path) -> None:
    original, canonical, _ = load_canonical(EFFNET_DYNAMO)
    analysis = Analysis(canonical)
    blocks = [s.target for s in analysis.of_kind("ibn")]
    # EfficientNet-B0 at depth 0.5: 10 MBConv blocks, each with an SE whose inner activation is
    # SiLU = x * Sigmoid(x) (its input used twice); the first has expand ratio 1 (no expand conv).
    assert len(blocks) == 10 and all(b.se is not None for b in blocks)
    assert [b.fusable for b in blocks] == [False] + [True] * 9
    assert all(a.kind == "silu" for b in blocks for a in b.depthwise_acts)
    exact = _apply(original, canonical, ["align-channels:p=32,mode=pad", "dw-to-dense@dw5"])
    assert all(step.applied for step in exact.steps) and exact.exact and exact.final.exact
    check_written_model(original, _round_trip(exact.model, tmp_path / "effnet_exact.onnx"))
    # Random weights amplify a fused block's error through the later blocks: only the rewrite is checked.
    fused = _apply(original, canonical, ["fuse-ibn@ibn1,ibn5", "depth-multiplier:ratio=0.5@ibn8"])
    assert [len(step.applied) for step in fused.steps] == [2, 1]
    check_written_model(original, _round_trip(fused.model, tmp_path / "effnet_fused.onnx"))


def test_dynamo_lraspp_resize_to_sizes_follows_channels(tmp_path: Path) -> None:
    original, canonical, _ = load_canonical(LRASPP_DYNAMO)
    analysis = Analysis(canonical)
    assert len(analysis.of_kind("ibn")) == 15  # MobileNetV3-Large: every bneck
    resizes = [n for n in canonical.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 2 and all(len(n.input) == 4 for n in resizes)  # Resize(x, '', '', sizes=[1, C, H, W])
    # The head's 32-channel group passes the first Resize; the second writes the graph output.
    head = next(s.target for s in analysis.of_kind("ch") if any(u.node.name == resizes[0].name
                                                                  for u in s.target.shapes))
    assert head.resizable and head.channels == 32
    result = _apply(original, canonical, [f"align-channels:p=48,mode=pad@{head.id}"])
    assert result.exact and result.final.exact and result.steps[0].applied
    written = _round_trip(result.model, tmp_path / "lraspp.onnx")
    check_written_model(original, written)
    inits = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    resize = next(n for n in written.graph.node if n.op_type == "Resize" and n.name == resizes[0].name)
    assert inits[resize.input[3]][1] == 48


@pytest.mark.parametrize("batch, target, out_shape, flattened", [
    (1, [1, 32], [1, 32], True),  # torch dynamo: torch.flatten(x, 1) written out as view(1, 32)
    ("n", [-1, 32], ["n", 32], True),  # dynamic batch, inferred
    ("n", [0, -1], ["n", 32], True),  # dynamic batch, copied
    (1, [2, 16], [2, 16], False),  # not (N, C*H*W)
    (1, [1, 8, 4], [1, 8, 4], False),
])
def test_flattening_reshape_becomes_flatten(batch, target: list[int], out_shape: list, flattened: bool) -> None:
    b = _LCNetBuilder(2)
    y = b.conv("x", 3, 8, 3, 2)  # (N, 8, 2, 2)
    b.inits.append(numpy_helper.from_array(np.array(target, np.int64), "target"))
    b.nodes.append(helper.make_node("Reshape", [y, "target"], ["out"], name="flatten"))
    graph = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)], b.inits)
    canonical, report = canonicalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert [n.op_type for n in canonical.graph.node] == ["Conv", "Flatten" if flattened else "Reshape"]
    assert canonical.graph.node[-1].name == "flatten"  # sites keep their anchors
    assert report.max_rel_error < 1e-6


def test_dynamic_batch_with_a_batch_1_reshape_runs_one_sample_at_a_time(tmp_path: Path) -> None:
    from hwopt.calibration.samples import OrtRunner

    # Declared dynamic batch, yet Reshape(x, [1, 16]) inside: such a graph runs batch 1 only.
    b = _LCNetBuilder(3)
    y = b.conv(b.conv(b.conv("x", 3, 8, 3, 2), 8, 8, 3, group=8), 8, 16)
    b.inits.append(numpy_helper.from_array(np.array([1, 16], np.int64), "target"))
    y = b.node("Reshape", [b.node("GlobalAveragePool", [y]), "target"])
    b.nodes.append(helper.make_node("Gemm", [y, b.const(b.rng.normal(size=(16, 4)))], ["out"], name="fc"))
    graph = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])], b.inits)
    path = tmp_path / "batch1.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    original, canonical, _ = load_canonical(path)
    runner = OrtRunner(canonical)
    outputs = runner.run_all(random_inputs(canonical, 5, 0))
    assert runner.batch == 1 and outputs["out"].shape == (5, 4)
    result = _apply(original, canonical, ["dw-to-dense", "align-channels:p=32,mode=pad"])
    assert result.exact and all(step.applied for step in result.steps)
    check_written_model(original, _round_trip(result.model, tmp_path / "out.onnx"))


def test_conv_with_a_computed_bias_is_left_alone(tmp_path: Path) -> None:
    # A bias computed at run time (not foldable): rules that resize or refit a conv must not touch it.
    b = _LCNetBuilder(4)
    mean = b.node("ReduceMean", ["x"], axes=[0, 2, 3], keepdims=0)  # (4,), depends on the input
    bias = b.node("Concat", [mean, mean], axis=0)  # (8,)
    w = b.const(b.rng.normal(size=(8, 4, 1, 1)))
    y = b.node("Conv", ["x", w, bias], kernel_shape=[1, 1])
    y = b.conv(b.node("Relu", [b.conv(y, 8, 8, 3, group=8)]), 8, 4)
    b.nodes[-1].output[0] = "out"
    graph = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])], b.inits)
    path = tmp_path / "computed_bias.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    original, canonical, _ = load_canonical(path)
    analysis = Analysis(canonical)
    (block,) = [s.target for s in analysis.of_kind("ibn")]
    assert not block.fusable  # its would-be expand conv has the computed bias
    inits = {t.name for t in canonical.graph.initializer}
    (conv,) = [n.name for n in canonical.graph.node if n.op_type == "Conv" and n.input[2] not in inits]
    # Its output's channel group has no producer a rule may resize, so it is no site at all.
    assert not any(conv in [p.name for p in s.target.producers] for s in analysis.of_kind("ch"))
    assert not any(s.target.depthwise for s in analysis.of_kind("ch"))
    result = _apply(original, canonical, ["align-channels:p=16,mode=pad", "dw-to-dense"])
    assert not result.steps[0].applied and result.steps[1].applied and result.exact
    check_written_model(original, _round_trip(result.model, tmp_path / "out.onnx"))


def test_dynamo_unoptimized_conv_bias_is_folded_and_batchnorm_fused() -> None:
    # torch.onnx.export(..., dynamo=True, optimize=False) writes every Conv bias as
    # Expand(CastLike(0, x), Shape(W)[0:1]) and keeps BatchNormalization after it.
    b = _LCNetBuilder(5)
    w = b.const(b.rng.normal(size=(8, 3, 3, 3)))
    shape = b.node("Shape", [w], start=0, end=1)
    zero = b.node("CastLike", [b.const(0.0), "x"])
    bias = b.node("Expand", [zero, shape])
    y = b.node("Conv", ["x", w, bias], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    stats = [b.const(b.rng.uniform(0.5, 1.5, 8)), b.const(b.rng.normal(size=8)), b.const(b.rng.normal(size=8)),
             b.const(b.rng.uniform(0.5, 1.5, 8))]
    b.node("BatchNormalization", [y, *stats], epsilon=1e-3)
    b.nodes[-1].output[0] = "out"
    graph = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 8, 8])], b.inits)
    canonical, report = canonicalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert [n.op_type for n in canonical.graph.node] == ["Conv"]
    assert report.removed("BatchNormalization") == 1 and report.max_rel_error < 1e-5


# -- a TensorFlow Lite model converted by tflite2onnx, see tests/data/README.md ---------------------

BLAZEFACE_TFLITE = DATA / "mediapipe_face_detection_short_range_tflite2onnx.onnx"


def test_tflite_blazeface_blocks_and_exact_rules(tmp_path: Path) -> None:
    original, canonical, _ = load_canonical(BLAZEFACE_TFLITE)
    assert original.producer_name == "tflite2onnx" and len(original.graph.output) == 2
    analysis = Analysis(canonical)
    # BlazeBlocks are depthwise -> 1x1 (no expand conv): found, but there is nothing to fuse.
    blocks = [s.target for s in analysis.of_kind("ibn")]
    assert len(blocks) == 16 and not any(b.fusable for b in blocks)
    assert sum(b.residual is not None for b in blocks) == 5  # identity shortcuts; the others are padded
    # Shortcuts that zero-pad channels (Pad on axis 1) tie two channel counts: reported, not resized.
    groups = [s.target for s in analysis.of_kind("ch")]
    assert any("channel_padding" in reason for g in groups for reason in g.blockers)
    result = _apply(original, canonical, ["dw-to-dense", "align-channels:p=32,mode=pad"])
    assert result.exact and result.final.exact and len(result.steps[0].applied) == 16
    check_written_model(original, _round_trip(result.model, tmp_path / "blazeface.onnx"))


# -- the command line on real exports ----------------------------------------------------------------


def _hwopt(*args: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "200"}
    env.pop("HWOPT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "hwopt.cli", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, env=env, timeout=600)


@pytest.mark.slow  # inspect, estimate and optimize as subprocesses on four real exports
@pytest.mark.parametrize("model", [MNV3_DYNAMO, EFFNET_DYNAMO, LRASPP_DYNAMO, BLAZEFACE_TFLITE], ids=lambda p: p.stem)
def test_cli_on_real_exports(model: Path, tmp_path: Path) -> None:
    for args in (["inspect"], ["estimate", "-t", "npu32"],
                 # --for-retraining: no sensitivity stage (tests/fidelity/test_fidelity.py covers it): this checks the
                 # CLI runs clean on real exports, within the suite's time
                 ["optimize", "-t", "cpu", "--no-compare", "--no-measure-finalists", "-o", str(tmp_path / "opt.onnx"),
                  "-q", "--for-retraining", "--calibration-samples", "8", "--eval-samples", "2"]):
        done = _hwopt(args[0], str(model), *args[1:])
        assert done.returncode == 0, (args, done.stderr[-2000:])
        # No onnxruntime error lines or tracebacks on the way (a failed batch probe is expected and quiet).
        assert "Traceback" not in done.stderr and "[E:onnxruntime" not in done.stderr, done.stderr[-2000:]
    if not (tmp_path / "opt.onnx").exists():  # no rewrite helps on cpu: the original is the model (said)
        assert "nothing written" in done.stderr, done.stderr[-2000:]
        return
    original, written = load_model(model), load_model(tmp_path / "opt.onnx")
    check_written_model(original, written)
