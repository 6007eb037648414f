"""One tiny, real ONNX model per ``Kernel``: what a real-hardware backend times.

Each model is exactly the kernel: one op (conv, gemm, pool, ...) with its
fused activation chain, on inputs of the kernel's geometry, with random but
seeded weights, so a measurement is reproducible and the same kernel always
builds the same bytes. Models are batch 1 and fp32 (or the kernel's dtype
where it is 2 bytes: fp16).

Geometry notes (the ``Kernel`` descriptor is light on purpose):
- conv/pool padding is derived so the output is exactly ``out_h x out_w``;
- eltwise inputs all have the output's full shape (a broadcast operand, as in
  squeeze-excite's gate, is timed as a full one: a small over-estimate);
- concat splits ``cin`` channels as evenly as it can over ``inputs`` tensors;
- 2-D and 1-D tensors are described as ``cin``/``cout`` values with h = w = 1;
- softmax and norm kernels are ``h`` rows of ``cout`` values, reduced along the last axis;
- a gemm of ``groups`` > 1 or with an activation as second operand is a batched MatMul
  ``[1, groups, rows, cin] @ [1, groups, cin, cout]`` (attention's Q @ K^T and P @ V).
``view`` kernels have no model: they are metadata and cost 0 (the backend
records that explicitly).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwopt.analysis.activations import UNARY_ELEMENTWISE
from hwopt.errors import HwoptError
from hwopt.analysis.kernel import Kernel

OPSET = 20  # Gelu and friends need 20; onnxruntime 1.18+ runs it
IR_VERSION = 10

# Activation kinds (hwopt.analysis.activations) -> how to build them. Unary ops map by lower-case name.
_UNARY_BY_KIND = {op.lower(): op for op in UNARY_ELEMENTWISE}
_CLIPS = {"relu6": (0.0, 6.0), "clip": (0.0, 6.0)}  # clip's own bounds don't change its cost
_GATED = {"silu": "Sigmoid", "x*hardsigmoid": "HardSigmoid", "swish": "Sigmoid"}  # x * gate(x)

_ELTWISE_VARIADIC = {"Sum", "Mean", "Max", "Min"}
_ELTWISE_BINARY = {"Add", "Sub", "Mul", "Div", "Pow"}
_REDUCE_GLOBAL = {"GlobalAveragePool", "GlobalMaxPool"}
_REDUCE_AXES = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2"}
_UNARY_STANDALONE = UNARY_ELEMENTWISE | {"Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Log", "Sin", "Cos"}

SUPPORTED_KINDS = ("conv", "dwconv", "gconv", "gemm", "eltwise", "act", "pool", "reduce", "resize", "concat",
                   "softmax", "layout", "norm")


class _Builder:
    """Accumulates nodes and initializers; names are sequential so a kernel always builds the same model."""

    def __init__(self, seed: int, elem: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.elem = elem
        self.np_dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float32
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, values: np.ndarray, stem: str = "w") -> str:
        name = self.fresh(stem)
        array = values if values.dtype.kind in "iub" else values.astype(self.np_dtype)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def weights(self, shape: tuple[int, ...], fan_in: int) -> str:
        # He-like scale keeps values finite through relu6/clip (timing does not care, checkers might).
        scale = 1.0 / np.sqrt(max(fan_in, 1))
        return self.const(self.rng.standard_normal(shape).astype(np.float32) * scale)

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.fresh("t")
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(op.lower() + "_"), **attrs))
        return out


def _activation(b: _Builder, x: str, act: str) -> str:
    """Append the fused activation chain ``act`` ("relu6", "hardswish+relu", ...) after x."""
    for kind in filter(None, act.split("+")):
        if kind in _CLIPS:
            low, high = _CLIPS[kind]
            x = b.node("Clip", [x, b.const(np.array(low)), b.const(np.array(high))])
        elif kind in _GATED:
            x = b.node("Mul", [x, b.node(_GATED[kind], [x])])
        elif kind in _UNARY_BY_KIND:
            x = b.node(_UNARY_BY_KIND[kind], [x])
        else:
            raise HwoptError(f"cannot build activation {kind!r} for a measurement model")
    return x


def _pads(size: int, out: int, window: int, stride: int) -> tuple[int, int]:
    """Begin/end padding that makes a window op of this geometry produce exactly ``out``."""
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _conv(b: _Builder, k: Kernel, x: str) -> str:
    groups = k.cin if k.kind == "dwconv" else max(k.groups, 1)
    if k.cin % groups or k.cout % groups:
        raise HwoptError(f"{k.describe()}: channels {k.cin}->{k.cout} not divisible by groups {groups}")
    top, bottom = _pads(k.h, k.out_h, k.kernel, k.stride)
    left, right = _pads(k.w, k.out_w, k.kw, k.stride)
    fan_in = k.cin // groups * k.kernel * k.kw
    weight = b.weights((k.cout, k.cin // groups, k.kernel, k.kw), fan_in)
    bias = b.const(np.zeros(k.cout, np.float32))
    y = b.node("Conv", [x, weight, bias], kernel_shape=[k.kernel, k.kw], strides=[k.stride, k.stride],
               pads=[top, left, bottom, right], group=groups)
    return _activation(b, y, k.act)


def _window(b: _Builder, k: Kernel, x: str) -> str:
    op = k.op or "MaxPool"
    if op not in ("MaxPool", "AveragePool"):
        raise HwoptError(f"{k.describe()}: cannot build pool op {op!r}")
    top, bottom = _pads(k.h, k.out_h, k.kernel, k.stride)
    left, right = _pads(k.w, k.out_w, k.kw, k.stride)
    return b.node(op, [x], kernel_shape=[k.kernel, k.kw], strides=[k.stride, k.stride],
                  pads=[top, left, bottom, right])


def _eltwise(b: _Builder, k: Kernel, inputs: list[str]) -> str:
    op = k.op or "Add"
    if op in _ELTWISE_VARIADIC:
        y = b.node(op, inputs)
    elif op in _ELTWISE_BINARY:
        y = inputs[0]
        for other in inputs[1:]:  # a 3-input Add is a chain of binary Adds
            y = b.node(op, [y, other])
    else:
        raise HwoptError(f"{k.describe()}: cannot build eltwise op {op!r}")
    return _activation(b, y, k.act)


def _reduce(b: _Builder, k: Kernel, x: str) -> str:
    op = k.op or "GlobalAveragePool"
    if op in _REDUCE_GLOBAL:
        return b.node(op, [x])
    if op in _REDUCE_AXES:
        return b.node(op, [x, b.const(np.array([2, 3], np.int64), "axes")], keepdims=1)
    raise HwoptError(f"{k.describe()}: cannot build reduce op {op!r}")


def _act(b: _Builder, k: Kernel, x: str) -> str:
    op = k.op or "Relu"
    if op == "Clip":
        return _activation(b, x, "clip")
    if op in _ELTWISE_BINARY:  # by a constant, e.g. a Keras export's input scaling (x * 1/127.5 - 1)
        return b.node(op, [x, b.const(np.array(0.5))])
    if op not in _UNARY_STANDALONE:
        raise HwoptError(f"{k.describe()}: cannot build standalone op {op!r}")
    return b.node(op, [x])


def kernel_model(kernel: Kernel, seed: int = 0) -> onnx.ModelProto:
    """A checked ONNX model computing exactly ``kernel`` (batch 1)."""
    k = kernel
    if k.kind == "view":
        raise HwoptError(f"{k.describe()}: a view kernel is metadata only and has no model (it costs 0)")
    if k.kind not in SUPPORTED_KINDS:
        raise HwoptError(f"cannot measure kernel kind {k.kind!r} ({k.op or 'no op'}): no measurement model for it")
    if min(k.cin, k.cout, k.h, k.w, k.out_h, k.out_w, k.kernel, k.kw, k.stride, k.inputs, k.batch) < 1:
        raise HwoptError(f"{k.describe()}: every dimension must be >= 1")
    elem = TensorProto.FLOAT16 if k.dtype_bytes == 2 else TensorProto.FLOAT
    b = _Builder(seed, elem)

    def tensor(name: str, shape: list[int]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, elem, shape)

    inputs: list[onnx.ValueInfoProto] = []
    image = [1, k.cin, k.h, k.w]
    if k.kind in ("conv", "dwconv", "gconv"):
        inputs.append(tensor("x", image))
        y = _conv(b, k, "x")
    elif k.kind == "gemm" and (k.groups > 1 or k.activation_operand):
        # attention's batched products: [1, g, rows, cin] @ [1, g, cin, cout], the second operand an
        # input (K^T, V) or, for stacked constant matrices, a weight
        groups, rows = max(k.groups, 1), max(k.batch // max(k.groups, 1), 1)
        inputs.append(tensor("x", [1, groups, rows, k.cin]))
        if k.activation_operand:
            inputs.append(tensor("x1", [1, groups, k.cin, k.cout]))
            operand = "x1"
        else:
            operand = b.weights((1, groups, k.cin, k.cout), k.cin)
        y = _activation(b, b.node("MatMul", ["x", operand]), k.act)
    elif k.kind == "gemm":
        inputs.append(tensor("x", [k.batch, k.cin]))
        y = b.node("Gemm", ["x", b.weights((k.cin, k.cout), k.cin), b.const(np.zeros(k.cout, np.float32))])
        y = _activation(b, y, k.act)
    elif k.kind in ("softmax", "norm"):  # rows of cout values, along the last axis (as attention has them)
        inputs.append(tensor("x", [1, k.h * k.w, k.cout]))
        if k.kind == "softmax":
            y = b.node(k.op or "Softmax", ["x"], axis=-1)
        else:
            y = b.node("LayerNormalization", ["x", b.const(np.ones(k.cout, np.float32)),
                                              b.const(np.zeros(k.cout, np.float32))], axis=-1, epsilon=1e-5)
    elif k.kind == "eltwise":
        shape = [1, k.cout, k.out_h, k.out_w]
        names = [f"x{i}" for i in range(max(k.inputs, 2))]
        inputs += [tensor(n, shape) for n in names]
        y = _eltwise(b, k, names)
    elif k.kind == "concat":
        count = max(k.inputs, 1)
        split = [k.cin // count + (1 if i < k.cin % count else 0) for i in range(count)]
        if min(split) < 1:
            raise HwoptError(f"{k.describe()}: {k.cin} channels cannot be split over {count} inputs")
        names = [f"x{i}" for i in range(count)]
        inputs += [tensor(n, [1, c, k.h, k.w]) for n, c in zip(names, split)]
        y = b.node("Concat", names, axis=1)
    else:
        inputs.append(tensor("x", image))
        if k.kind == "act":
            y = _act(b, k, "x")
        elif k.kind == "pool":
            y = _window(b, k, "x")
        elif k.kind == "reduce":
            y = _reduce(b, k, "x")
        elif k.kind == "resize":
            sizes = b.const(np.array([1, k.cin, k.out_h, k.out_w], np.int64), "sizes")
            y = b.node("Resize", ["x", "", "", sizes], mode="nearest" if k.op != "linear" else "linear")
        else:  # layout: NCHW -> NHWC, the data movement a Transpose in a detection head does
            y = b.node("Transpose", ["x"], perm=[0, 2, 3, 1])
    graph = helper.make_graph(b.nodes, "kernel", inputs, [helper.make_tensor_value_info(y, elem, None)],
                              initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwopt")
    model.ir_version = IR_VERSION
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    return model
