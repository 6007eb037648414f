"""The ONNX -> int8 TFLite writer, run by LiteRT against onnxruntime.

Every comparison runs on held-out inputs (another seed than the calibration's). Tolerances are int8's:
- one op at a time: relative L2 of the outputs < 3% (one requantization step, plus int8 weights);
- real exports (random weights: int8 errors compound layer after layer, ~1% per layer here, where a
  trained net's structured activations would average much of it out): a bound per model on the median
  relative L2 over 8 held-out inputs, ~1.5x what this writer measured, and a least top-1 agreement on
  classifiers (``REAL``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.canonical.canonicalize import canonicalize
from hwopt.errors import HwoptError
from hwopt.io.model import InputShape, load_model
from hwopt.tflite.writer import write_tflite
from hwopt.tflite.litert import run_tflite
from hwopt.tflite.quantize import random_samples

pytest.importorskip("ai_edge_litert")
pytest.importorskip("ethosu.vela")

DATA = Path(__file__).resolve().parents[1] / "data"
OP_TOLERANCE = 0.03


def _reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _rel_l2(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.linalg.norm(candidate - reference) / max(np.linalg.norm(reference), 1e-12))


def _agreement(model: onnx.ModelProto, path: Path, samples: int = 1, shapes=(), calibration: int = 8,
               ) -> tuple[dict[str, list[float]], dict[str, int], object]:
    """(relative L2 per output and held-out input, top-1 agreements per output, WriteResult)."""
    result = write_tflite(model, path, input_shapes=list(shapes), calibration_count=calibration)
    canonical, _ = canonicalize(model, list(shapes), verify=False)
    held_out = random_samples(canonical, samples, seed=1234)  # the calibration used seed 0
    errors: dict[str, list[float]] = {}
    top1: dict[str, int] = {}
    for i in range(samples):
        feeds = {name: array[i:i + 1] for name, array in held_out.items()}
        expected = _reference(canonical, feeds)
        got = run_tflite(path, result, feeds)
        for name, value in expected.items():
            assert got[name].shape == value.shape
            errors.setdefault(name, []).append(_rel_l2(value, got[name]))
            top1[name] = top1.get(name, 0) + int(value.reshape(-1).argmax() == got[name].reshape(-1).argmax())
    return errors, top1, result


# --- one op at a time -------------------------------------------------------------------------------------

def _model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                              [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


RNG = np.random.default_rng(7)


def _w(*shape, scale: float = 0.3) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32) * scale


def _conv(name, x, y, w, b=None, **attrs):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], name=name, **attrs)


OPS = {
    "conv_relu6": (_model([_conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1]),
                           helper.make_node("Clip", ["t", "lo", "hi"], ["y"], name="r")],
                          [("x", [1, 8, 12, 12])], [("y", [1, 16, 12, 12])],
                          [("w", _w(16, 8, 3, 3)), ("b", _w(16)), ("lo", 0.0), ("hi", 6.0)]), {"CONV_2D": 1}),
    "conv_stride2_torch_pads": (_model([_conv("c", "x", "y", "w", strides=[2, 2], pads=[1, 1, 1, 1])],
                                       [("x", [1, 8, 16, 16])], [("y", [1, 8, 8, 8])], [("w", _w(8, 8, 3, 3))]),
                                {"PAD": 1, "CONV_2D": 1}),
    "depthwise_relu": (_model([_conv("c", "x", "t", "w", group=8, pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["t"], ["y"], name="r")],
                              [("x", [1, 8, 12, 12])], [("y", [1, 16, 12, 12])], [("w", _w(16, 1, 3, 3))]),
                       {"DEPTHWISE_CONV_2D": 1}),
    "grouped": (_model([_conv("c", "x", "y", "w", group=4, pads=[1, 1, 1, 1])],
                       [("x", [1, 16, 10, 10])], [("y", [1, 16, 10, 10])], [("w", _w(16, 4, 3, 3))]), {"CONV_2D": 1}),
    "hard_swish": (_model([helper.make_node("HardSigmoid", ["x"], ["h"], name="hs", alpha=1 / 6, beta=0.5),
                           helper.make_node("Mul", ["x", "h"], ["y"], name="m")],
                          [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])]), {"HARD_SWISH": 1}),
    "se_gate": (_model([helper.make_node("GlobalAveragePool", ["x"], ["p"], name="gap"),
                        helper.make_node("HardSigmoid", ["p"], ["g"], name="hs", alpha=0.2, beta=0.5),
                        helper.make_node("Mul", ["x", "g"], ["y"], name="m")],
                       [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])]), {"MEAN": 1, "MUL": 2, "ADD": 1}),
    "silu_add": (_model([helper.make_node("Sigmoid", ["x"], ["s"], name="s"),
                         helper.make_node("Mul", ["x", "s"], ["m"], name="m"),
                         helper.make_node("Add", ["m", "c"], ["y"], name="a")],
                        [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])], [("c", _w(8, 1, 1))]),
                 {"LOGISTIC": 1, "MUL": 1, "ADD": 1}),
    "add_batchnorm_relu": (_model([helper.make_node("Add", ["x", "x2"], ["a"], name="a"),
                                   helper.make_node("BatchNormalization", ["a", "g", "bt", "mu", "var"], ["n"],
                                                    name="bn", epsilon=1e-5),
                                   helper.make_node("Relu", ["n"], ["y"], name="r")],
                                  [("x", [1, 8, 6, 6]), ("x2", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])],
                                  [("g", _w(8) + 1.0), ("bt", _w(8)), ("mu", _w(8)), ("var", np.abs(_w(8)) + 0.5)]),
                           {"ADD": 2, "MUL": 1}),
    "prelu_per_channel": (_model([helper.make_node("PRelu", ["x", "slope"], ["y"], name="p")],
                                 [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])],
                                 [("slope", np.linspace(-0.3, 0.9, 8, dtype=np.float32).reshape(8, 1, 1))]),
                          {"PRELU": 1}),
    "prelu_one_slope": (_model([helper.make_node("PRelu", ["x", "slope"], ["y"], name="p")],
                               [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])], [("slope", np.full((8, 1, 1), 0.25))]),
                        {"LEAKY_RELU": 1}),
    "pools": (_model([helper.make_node("MaxPool", ["x"], ["m"], name="mp", kernel_shape=[3, 3], strides=[2, 2],
                                       pads=[1, 1, 1, 1]),
                      helper.make_node("AveragePool", ["m"], ["y"], name="ap", kernel_shape=[2, 2], strides=[2, 2])],
                     [("x", [1, 8, 16, 16])], [("y", [1, 8, 4, 4])]),
              {"PADV2": 1, "MAX_POOL_2D": 1, "AVERAGE_POOL_2D": 1}),
    "flatten_gemm_softmax": (_model([helper.make_node("Flatten", ["x"], ["f"], name="f"),
                                     helper.make_node("Gemm", ["f", "w", "b"], ["g"], name="g", transB=1),
                                     helper.make_node("Softmax", ["g"], ["y"], name="s", axis=1)],
                                    [("x", [1, 4, 3, 3])], [("y", [1, 10])], [("w", _w(10, 36)), ("b", _w(10))]),
                             {"TRANSPOSE": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1}),
    "matmul": (_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                      [("x", [1, 24])], [("y", [1, 12])], [("w", _w(24, 12))]), {"FULLY_CONNECTED": 1}),
    "transpose_concat": (_model([helper.make_node("Transpose", ["x"], ["t"], name="t", perm=[0, 2, 3, 1]),
                                 helper.make_node("Mul", ["t", "two"], ["u"], name="m"),
                                 helper.make_node("Concat", ["t", "u"], ["y"], name="c", axis=3)],
                                [("x", [1, 4, 5, 6])], [("y", [1, 5, 6, 8])], [("two", 2.0)]),
                         {"TRANSPOSE": 1, "MUL": 1, "QUANTIZE": 1, "CONCATENATION": 1}),
    "resize_pad": (_model([helper.make_node("Resize", ["x", "", "", "size"], ["r"], name="bilinear", mode="linear",
                                            coordinate_transformation_mode="half_pixel"),
                           helper.make_node("Resize", ["r", "", "", "size2"], ["n"], name="nearest", mode="nearest",
                                            coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
                           helper.make_node("Pad", ["n", "pads"], ["y"], name="pad")],
                          [("x", [1, 4, 5, 5])], [("y", [1, 6, 22, 21])],
                          [("size", np.array([1, 4, 10, 10])), ("size2", np.array([1, 4, 20, 20])),
                           ("pads", np.array([0, 1, 1, 0, 0, 1, 1, 1]))]),
                   {"RESIZE_BILINEAR": 1, "RESIZE_NEAREST_NEIGHBOR": 1, "PAD": 1}),
    "conv_transpose": (_model([helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], name="up", strides=[2, 2],
                                                kernel_shape=[4, 4], pads=[1, 1, 1, 1]),
                               helper.make_node("ConvTranspose", ["t", "dw"], ["y"], name="dwup", strides=[2, 2],
                                                kernel_shape=[2, 2], group=8)],
                              [("x", [1, 4, 6, 6])], [("y", [1, 8, 24, 24])],
                              [("w", _w(4, 8, 4, 4)), ("b", _w(8)), ("dw", _w(8, 1, 2, 2))]), {"TRANSPOSE_CONV": 2}),
    # The ReLU rides in TRANSPOSE_CONV's fused activation: one operator, as TensorFlow's converter writes
    # it (a RELU apart is one more NPU pass in Vela). The numbers alone cannot tell: the output's int8
    # range starts at 0 either way, so the operator count is what fails without the fusion.
    "conv_transpose_relu": (_model([helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], name="up",
                                                     strides=[2, 2], kernel_shape=[2, 2]),
                                    helper.make_node("Relu", ["t"], ["y"], name="r")],
                                   [("x", [1, 4, 6, 6])], [("y", [1, 8, 12, 12])],
                                   [("w", _w(4, 8, 2, 2)), ("b", _w(8))]), {"TRANSPOSE_CONV": 1}),
    # Max of two activations with other ranges than its output, Min with a constant quantized like the
    # output: MAXIMUM/MINIMUM compare raw int8 values, so the writer gives operands and results one range
    # (quantize.share_scales, as TFLite's quantizer does) and no QUANTIZE is needed.
    "max_min": (_model([helper.make_node("Mul", ["x", "half"], ["h"], name="h"),
                        helper.make_node("Max", ["x", "h"], ["m"], name="max"),
                        helper.make_node("Min", ["m", "cap"], ["y"], name="min")],
                       [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])],
                       [("half", 0.5), ("cap", np.linspace(0.5, 2.0, 8, dtype=np.float32).reshape(8, 1, 1))]),
                {"MUL": 1, "MAXIMUM": 1, "MINIMUM": 1}),
    # PRelu(x, a) with every a <= 1 as Max(x, a * x): a depthwise 1x1 conv feeding MAXIMUM with x.
    "prelu_as_max_depthwise": (_model([_conv("dw", "x", "ax", "a", group=8),
                                       helper.make_node("Max", ["x", "ax"], ["y"], name="max")],
                                      [("x", [1, 8, 6, 6])], [("y", [1, 8, 6, 6])],
                                      [("a", np.linspace(-0.3, 0.9, 8, dtype=np.float32).reshape(8, 1, 1, 1))]),
                               {"DEPTHWISE_CONV_2D": 1, "MAXIMUM": 1}),
    # Steps of 1 (channels, negative start, an end past the axis) as SLICE; a step of 2 on W as
    # STRIDED_SLICE (Vela's NPU takes H/W strides); a 3-D slice keeps ONNX's axes.
    "slices": (_model([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["s"], name="slice"),
                       helper.make_node("Slice", ["s", "starts2", "ends2", "axes2", "steps2"], ["y"], name="strided"),
                       helper.make_node("Slice", ["z", "starts3", "ends3", "axes3"], ["y3"], name="slice3d")],
                      [("x", [1, 8, 12, 12]), ("z", [1, 10, 16])], [("y", [1, 4, 8, 6]), ("y3", [1, 4, 16])],
                      [("starts", np.array([2, -8])), ("ends", np.array([6, 1 << 40])), ("axes", np.array([1, 2])),
                       ("starts2", np.array([0])), ("ends2", np.array([12])), ("axes2", np.array([3])),
                       ("steps2", np.array([2])), ("starts3", np.array([3])), ("ends3", np.array([-3])),
                       ("axes3", np.array([-2]))]),
               {"SLICE": 2, "STRIDED_SLICE": 1}),
    # Sizes as the opset-13 input (unequal: SPLIT_V), then equal parts from the outputs' shapes (SPLIT).
    "splits": (_model([helper.make_node("Split", ["x", "split"], ["a", "b"], name="split_v", axis=1),
                       helper.make_node("Split", ["b"], ["b1", "b2"], name="split_h", axis=2)],
                      [("x", [1, 12, 6, 6])], [("a", [1, 4, 6, 6]), ("b1", [1, 8, 3, 6]), ("b2", [1, 8, 3, 6])],
                      [("split", np.array([4, 8]))]),
               {"SPLIT_V": 1, "SPLIT": 1}),
    # Opset 11: the sizes as an attribute.
    "split_attribute": (_model([helper.make_node("Split", ["x"], ["a", "b"], name="split", axis=3, split=[2, 4])],
                               [("x", [1, 4, 5, 6])], [("a", [1, 4, 5, 2]), ("b", [1, 4, 5, 4])], opset=11),
                        {"SPLIT_V": 1}),
    # YOLOX's Focus as onnxruntime fuses it: 4 STRIDED_SLICEs (H/W strides 2) and a CONCATENATION, all on
    # Vela's NPU (it has no NPU SPACE_TO_DEPTH).
    "space_to_depth": (_model([helper.make_node("SpaceToDepth", ["x"], ["s"], name="s2d", blocksize=2),
                               _conv("c", "s", "y", "w", pads=[1, 1, 1, 1])],
                              [("x", [1, 3, 8, 12])], [("y", [1, 8, 4, 6])], [("w", _w(8, 12, 3, 3))]),
                       {"STRIDED_SLICE": 4, "CONCATENATION": 1, "CONV_2D": 1}),
    # ... and with the channel Gather onnxruntime puts behind it (Focus's concat order (0,0), (1,0), (0,1),
    # (1,1)): fused, the slices are concatenated in that order.
    "space_to_depth_gather": (_model([helper.make_node("SpaceToDepth", ["x"], ["s"], name="s2d", blocksize=2),
                                      helper.make_node("Gather", ["s", "idx"], ["g"], name="reorder", axis=1),
                                      _conv("c", "g", "y", "w", pads=[1, 1, 1, 1])],
                                     [("x", [1, 3, 8, 12])], [("y", [1, 8, 4, 6])],
                                     [("idx", np.array([0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11])),
                                      ("w", _w(8, 12, 3, 3))]),
                              {"STRIDED_SLICE": 4, "CONCATENATION": 1, "CONV_2D": 1}),
    # DepthToSpace (DCR, TensorFlow's; MediaPipe's pose_detection upsamples with it): a channel SLICE per
    # block row, a CONCATENATION of the rows; the channels are not a multiple of 4 per block row on purpose.
    "depth_to_space": (_model([helper.make_node("DepthToSpace", ["x"], ["d"], name="d2s", blocksize=2, mode="DCR"),
                               _conv("c", "d", "y", "w", pads=[1, 1, 1, 1])],
                              [("x", [1, 12, 5, 6])], [("y", [1, 4, 10, 12])], [("w", _w(4, 3, 3, 3))]),
                       {"SLICE": 2, "RESHAPE": 3, "CONCATENATION": 1, "CONV_2D": 1}),
    # A Gather of constant indices: each run of consecutive ones a SLICE (a negative index counts from the end).
    "gather_runs": (_model([helper.make_node("Gather", ["x", "idx"], ["g"], name="pick", axis=1),
                            _conv("c", "g", "y", "w")],
                           [("x", [1, 8, 5, 5])], [("y", [1, 4, 5, 5])],
                           [("idx", np.array([5, 6, -1, 0, 1, 3])), ("w", _w(4, 6, 1, 1))]),
                    {"SLICE": 3, "CONCATENATION": 1, "CONV_2D": 1}),
}

INT_INITIALIZERS = {"size", "size2", "pads", "split", "idx"} | {f"{key}{suffix}" for key in ("starts", "ends", "axes", "steps")
                                                         for suffix in ("", "2", "3")}


def _fix_int_inits(model: onnx.ModelProto) -> onnx.ModelProto:
    """Resize sizes, Pad pads, Slice starts/ends/axes/steps, Split sizes and Gather indices are int64 in ONNX."""
    for init in model.graph.initializer:
        if init.name in INT_INITIALIZERS:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.int64), init.name))
    return model


@pytest.mark.parametrize("case", sorted(OPS))
def test_one_op_agrees_with_onnxruntime(tmp_path: Path, case: str) -> None:
    model, expected_ops = OPS[case]
    # 64 calibration inputs: a tiny tensor's range is otherwise narrower than the held-out inputs'.
    errors, _, result = _agreement(_fix_int_inits(model), tmp_path / f"{case}.tflite", samples=2, calibration=64)
    assert dict(result.operators) == expected_ops
    assert max(max(e) for e in errors.values()) < OP_TOLERANCE, errors


# Cases whose every operator Vela 5.2 runs on ethos-u55-256's NPU (none falls back to the CPU): Vela checks
# MAXIMUM/MINIMUM's matching quantization and STRIDED_SLICE's batch/channel strides, so a writer mistake
# there shows up as a CPU operator.
NPU_CASES = ("max_min", "prelu_as_max_depthwise", "slices", "splits", "split_attribute", "space_to_depth",
             "space_to_depth_gather", "gather_runs", "depth_to_space")


@pytest.mark.parametrize("case", NPU_CASES)
def test_vela_runs_the_case_on_the_npu(tmp_path: Path, case: str) -> None:
    from hwopt.backends.vela import VelaSettings, compile_tflite
    from hwopt.targets import load_target

    written = write_tflite(_fix_int_inits(OPS[case][0]), tmp_path / f"{case}.tflite")
    result = compile_tflite(written.path, VelaSettings.from_target(load_target("ethos-u55-256")))
    assert result.cpu_operators == 0 and result.npu_operators > 0, [(l.operator, l.target) for l in result.layers]


_BAD = {
    "Slice": (_model([helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"], name="flip")],
                     [("x", [1, 4, 6, 6])], [("y", [1, 4, 6, 6])],
                     [("starts", np.array([-1])), ("ends", np.array([-(1 << 40)])), ("axes", np.array([3])),
                      ("steps", np.array([-1]))]), r"node 'flip' \(Slice\): .*step -1 on axis 3"),
    "DepthToSpace": (_model([helper.make_node("DepthToSpace", ["x"], ["y"], name="crd", blocksize=2, mode="CRD")],
                            [("x", [1, 8, 3, 3])], [("y", [1, 2, 6, 6])]), r"node 'crd' \(DepthToSpace\): .*mode CRD"),
    "Max": (_model([helper.make_node("Max", ["x", "x2", "x3"], ["y"], name="max3")],
                   [("x", [1, 4, 6, 6]), ("x2", [1, 4, 6, 6]), ("x3", [1, 4, 6, 6])], [("y", [1, 4, 6, 6])]),
            r"node 'max3' \(Max\): .*Max of 3 operands"),
}


@pytest.mark.parametrize("op", sorted(_BAD))
def test_unwritable_form_is_one_line(tmp_path: Path, op: str) -> None:
    model, message = _BAD[op]
    with pytest.raises(HwoptError, match=message):
        write_tflite(_fix_int_inits(model), tmp_path / "out.tflite")
    assert not (tmp_path / "out.tflite").exists()


# --- real exports ----------------------------------------------------------------------------------------

# model file -> (input shapes, bound on the median relative L2 over 8 held-out inputs, least top-1 agreement
# of 8 for classifiers). Measured by this writer (median, top-1): ppocr 0.025 8/8, mediapipe 0.22,
# efficientnet 0.34 6/8, lraspp 0.13, mobilenetv3 0.16 6/8, unet 0.024. Random-weight classifiers have
# near-ties between their logits, so a top-1 flips on int8 noise that a trained one would not notice.
REAL = {
    "torch_dynamo_mobilenet_v3_small_w025.onnx": ((), 0.25, 5),
    "torch_dynamo_efficientnet_b0_w025.onnx": ((), 0.50, 5),
    "torch_dynamo_lraspp_mobilenet_v3_large_w025.onnx": ((), 0.20, None),
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": (("x=1x3x48x192",), 0.05, 8),
    "mediapipe_face_detection_short_range_tflite2onnx.onnx": ((), 0.35, None),
    "torch_unet_db_head_convtranspose.onnx": ((), 0.04, None),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_export_agrees_with_onnxruntime(tmp_path: Path, name: str) -> None:
    shapes, bound, least_top1 = REAL[name]
    shapes = [InputShape.parse(s) for s in shapes]
    model = load_model(DATA / name)
    errors, top1, result = _agreement(model, tmp_path / "model.tflite", 8, shapes)
    assert max(float(np.median(e)) for e in errors.values()) < bound, errors
    if least_top1 is not None:
        assert min(top1.values()) >= least_top1, top1
    assert result.calibration == "random" and result.calibration_count == 8
    # Layers keep the ONNX names: every operator's output is an ONNX tensor, or named after one ("x/pad").
    canonical, _ = canonicalize(model, shapes, verify=False)
    tensors = {out for node in canonical.graph.node for out in node.output} | {v.name for v in canonical.graph.input}
    nodes = {node.name for node in canonical.graph.node}
    for tensor, onnx_nodes in result.layers.items():
        assert any(tensor == t or tensor.startswith(t + "/") for t in tensors), tensor
        assert set(onnx_nodes) <= nodes


def test_mobilenetv2_example(tmp_path: Path, example_path) -> None:
    """The shipped example (224x224, 1000 classes): same top-1 on 2 held-out inputs, relative L2 < 0.3
    (measured 0.19-0.21)."""
    model = load_model(example_path("mobilenetv2"))
    errors, top1, result = _agreement(model, tmp_path / "mobilenetv2.tflite", 2)
    assert max(errors["output"]) < 0.3 and top1["output"] == 2, (errors, top1)
    assert result.inputs[0].tflite_shape == (1, 224, 224, 3) and result.inputs[0].onnx_shape == (1, 3, 224, 224)


def test_calibration_samples_are_used_and_said(tmp_path: Path) -> None:
    model, _ = OPS["conv_relu6"]
    samples = {"x": RNG.standard_normal((4, 8, 12, 12)).astype(np.float32) * 5}
    with_samples = write_tflite(model, tmp_path / "a.tflite", samples=samples)
    random = write_tflite(model, tmp_path / "b.tflite")
    assert (with_samples.calibration, with_samples.calibration_count) == ("samples", 4)
    assert random.calibration == "random"
    assert with_samples.inputs[0].scale > 3 * random.inputs[0].scale  # ranges from the (5x wider) samples


def test_unconvertible_op_names_the_node_before_any_work(tmp_path: Path) -> None:
    model = _model([_conv("c", "x", "t", "w"), helper.make_node("Erf", ["t"], ["y"], name="the_erf")],
                   [("x", [1, 4, 6, 6])], [("y", [1, 4, 6, 6])], [("w", _w(4, 4, 1, 1))])
    path = tmp_path / "out.tflite"
    with pytest.raises(HwoptError, match=r"node 'the_erf' \(Erf\): the TFLite writer has no converter for Erf"):
        write_tflite(model, path)
    assert not path.exists()


def test_unsupported_attribute_is_one_line(tmp_path: Path) -> None:
    model = _model([helper.make_node("Pad", ["x", "pads"], ["y"], name="reflect", mode="reflect")],
                   [("x", [1, 2, 4, 4])], [("y", [1, 2, 6, 6])], [("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1]))])
    with pytest.raises(HwoptError, match=r"node 'reflect' \(Pad\): cannot write it as TFLite: reflect padding"):
        write_tflite(_fix_int_inits(model), tmp_path / "out.tflite")


def test_symbolic_output_dims_take_the_inferred_shape(tmp_path: Path) -> None:
    """A graph output declared ['batch', 8, 'anchors'] (as YOLOv8 exports declare theirs), the input fixed by
    --input-shape: the TFLite output has the inferred 1x8x36, not 1s for the symbolic dims (LiteRT resizes
    it at run time and agreed anyway; Vela refused the CONCATENATION writing 1x8x1)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r"], name="flat"),
         helper.make_node("Concat", ["r", "r"], ["y"], name="cat", axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, "anchors"])],
        [numpy_helper.from_array(np.array([1, 4, -1], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    errors, _, result = _agreement(model, tmp_path / "out.tflite", shapes=[InputShape.parse("x=1x4x6x6")])
    assert result.outputs[0].tflite_shape == (1, 8, 36) and max(errors["y"]) < OP_TOLERANCE
