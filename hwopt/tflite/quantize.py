"""int8 quantization of the graph being written: activation ranges from calibration, and the parameters
TFLite's int8 kernels (and Vela) expect.

- Activations: per-tensor asymmetric int8 (scale, zero point) over the [min, max] every ONNX tensor took
  on the calibration samples, widened to hold 0 (TFLite pads and ReLUs rely on 0 being exact). Without
  samples, seeded standard-normal inputs stand in and ``Ranges.source`` says "random": the figures of a
  model quantized that way are real for latency (Vela does not look at values) but its numerics are only
  as representative as the random inputs.
- Weights: per-channel symmetric int8 (zero point 0), the TFLite int8 spec for conv, depthwise, transpose
  conv and fully-connected weights; biases int32 at scale ``input_scale * weight_scale[c]``.
- Outputs of LOGISTIC and SOFTMAX have the fixed parameters the TFLite kernels require (1/256, -128).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from hwopt.errors import HwoptError
from hwopt.tflite.graph import Quant

Q_MIN, Q_MAX = -128, 127
UNIT_INTERVAL = Quant((1.0 / 256.0,), (-128,))  # LOGISTIC / SOFTMAX outputs
MIN_SPAN = 1e-6  # a constant-zero tensor still needs a positive scale


@dataclass
class Ranges:
    """[min, max] of every float tensor of the model over the calibration samples."""

    values: dict[str, tuple[float, float]]
    source: str  # "samples" | "random"
    count: int

    def of(self, name: str) -> tuple[float, float]:
        if name not in self.values:
            raise HwoptError(f"no calibration range for tensor {name!r}")
        return self.values[name]


def random_samples(model: onnx.ModelProto, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` seeded standard-normal samples per graph input, samples first and without the batch axis
    (the layout of ``--calibration`` files: one sample is ``array[i:i + 1]``)."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    samples = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim]
        # A fixed leading dim over 1 (a batched-matmul kernel's 60 heads) is one sample's, not a batch.
        samples[value.name] = rng.standard_normal((count * shape[0], *shape[1:])).astype(np.float32)
    return samples


def _leading(model: onnx.ModelProto) -> dict[str, int]:
    """Each graph input's fixed leading dim (1 where open): how many rows of its samples one run takes."""
    return {v.name: (v.type.tensor_type.shape.dim[0].dim_value or 1) if v.type.tensor_type.shape.dim else 1
            for v in model.graph.input}


def collect_ranges(model: onnx.ModelProto, samples: dict[str, np.ndarray] | None, count: int = 8,
                   seed: int = 0) -> Ranges:
    """Run ``model`` (canonical, shapes inferred) on the samples with every float tensor as an output."""
    source = "samples" if samples else "random"
    if not samples:
        samples = random_samples(model, count, seed)
    float_values = {v.name for v in list(model.graph.value_info) + list(model.graph.output)
                    if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    watched = [out for node in model.graph.node for out in node.output if out in float_values]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in watched
                              if n not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    rows = _leading(model)
    total = min(len(array) // rows.get(name, 1) for name, array in samples.items())
    for i in range(total):
        feed = {name: array[i * rows.get(name, 1):(i + 1) * rows.get(name, 1)].astype(np.float32)
                for name, array in samples.items()}
        for name, value in list(feed.items()) + list(zip(names, session.run(names, feed))):
            value = np.asarray(value)
            if value.size == 0 or value.dtype.kind != "f":
                continue
            if not np.all(np.isfinite(value)):
                raise HwoptError(f"tensor {name!r} is not finite on the calibration inputs: cannot quantize it")
            lows[name] = min(lows.get(name, np.inf), float(value.min()))
            highs[name] = max(highs.get(name, -np.inf), float(value.max()))
    return Ranges({n: (lows[n], highs[n]) for n in lows}, source, total)


def activation_quant(low: float, high: float) -> Quant:
    """Per-tensor asymmetric int8 holding [low, high] and 0."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low < MIN_SPAN:
        high = low + MIN_SPAN
    scale = (high - low) / (Q_MAX - Q_MIN)
    zero = int(np.clip(round(Q_MIN - low / scale), Q_MIN, Q_MAX))
    return Quant((float(np.float32(scale)),), (zero,))


def quantize_values(values: np.ndarray, quant: Quant) -> np.ndarray:
    """Real values -> int8 with per-tensor ``quant`` (rounding half away from zero, saturating)."""
    q = np.round(values.astype(np.float64) / quant.scale[0]) + quant.zero_point[0]
    return np.clip(q, Q_MIN, Q_MAX).astype(np.int8)


def dequantize_values(values: np.ndarray, quant: Quant) -> np.ndarray:
    return ((values.astype(np.float32) - quant.zero_point[0]) * quant.scale[0]).astype(np.float32)


def constant_quant(values: np.ndarray) -> tuple[np.ndarray, Quant]:
    """A constant operand of an element-wise op: per-tensor asymmetric over its own values."""
    quant = activation_quant(float(values.min()), float(values.max())) if values.size else activation_quant(0, 0)
    return quantize_values(values, quant), quant


def weights_per_channel(weights: np.ndarray, axis: int) -> tuple[np.ndarray, Quant]:
    """Symmetric int8 per channel along ``axis`` (zero point 0)."""
    moved = np.moveaxis(weights.astype(np.float64), axis, 0).reshape(weights.shape[axis], -1)
    peak = np.abs(moved).max(axis=1) if moved.size else np.zeros(weights.shape[axis])
    scales = peak / Q_MAX
    # An all-zero channel gets a typical scale, not 0 (TFLite needs scale > 0) nor 1 (its bias would round away).
    fallback = float(np.median(scales[scales > 0])) if np.any(scales > 0) else 1.0 / Q_MAX
    scales = np.where(scales > 0, scales, fallback).astype(np.float32)
    shape = [1] * weights.ndim
    shape[axis] = -1
    q = np.clip(np.round(weights / scales.reshape(shape)), -Q_MAX, Q_MAX).astype(np.int8)
    return q, Quant(tuple(float(s) for s in scales), (0,) * len(scales), axis)


def bias_int32(bias: np.ndarray, input_quant: Quant, weight_quant: Quant) -> tuple[np.ndarray, Quant]:
    """int32 bias at scale input_scale * weight_scale[c]: what TFLite's int8 kernels check and add."""
    # float32 products, as the kernels recompute them (LiteRT compares the bias scale to this product).
    scales = np.float32(input_quant.scale[0]) * np.asarray(weight_quant.scale, np.float32)
    q = np.clip(np.round(bias.astype(np.float64) / scales.astype(np.float64)), -(2 ** 31), 2 ** 31 - 1)
    return q.astype(np.int32), Quant(tuple(float(s) for s in scales), (0,) * len(scales), 0)


SAME_SCALE_OPS = ("Max", "Min")


def share_scales(model: onnx.ModelProto, ranges: Ranges) -> Ranges:
    """MAXIMUM / MINIMUM compare raw int8 values, so their operands and output need one quantization. Give
    them one range, the union of theirs, as TFLite's own quantizer does (same scale for operands and
    result): the producers then write that quantization directly (their kernels requantize anyway) and no
    QUANTIZE op is needed between them. PRelu written as Max(x, slope * x) is the case that matters: two
    QUANTIZEs per PRelu cost Ethos-U55 14% of a MediaPipe landmark net."""
    values = dict(ranges.values)
    tied = [[n for n in list(node.input) + list(node.output) if n in values]
            for node in model.graph.node if node.op_type in SAME_SCALE_OPS]
    changed = True
    while changed:  # a tensor in two such ops ties them together: widen until nothing moves
        changed = False
        for names in tied:
            joint = (min(values[n][0] for n in names), max(values[n][1] for n in names))
            for n in names:
                changed |= values[n] != joint
                values[n] = joint
    return Ranges(values, ranges.source, ranges.count)
