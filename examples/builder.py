"""A small ONNX graph builder for the example models (random weights).

The examples stand in for real exported vision models, so the builder copies
the habits of real exporters rather than producing one tidy canonical form:

- weights as initializers (torch) or as ``Constant`` nodes (paddle2onnx);
- every conv followed by a real ``BatchNormalization`` node (unfused BN);
- a symbolic batch dimension on graph inputs and outputs;
- ReLU6 as ``Clip`` with constant min/max inputs, or as ``Max(Min(x, 6), 0)``;
- hard-swish as the ``HardSwish`` op, as ``x * HardSigmoid(x)``, or as the old
  torch decomposition ``x * (Clip(x + 3, 0, 6) / 6)``; SiLU as
  ``x * Sigmoid(x)``;
- stray ``Identity`` nodes;
- node names in torch style (``/features/features.3/conv/conv.0/conv.0.0/Conv``),
  paddle style (``conv2d_12``) or no names at all.

Random weights alone would make activations explode or vanish through a deep
net, and a BatchNorm with mean 0 / var 1 is the trivial case a BN-folding
rewrite never gets wrong. So every BatchNorm is calibrated: its running
statistics are the observed per-channel statistics of its input on a small,
seeded random batch (computed with onnxruntime on the graph built so far),
perturbed a little. Evaluation is incremental: values already computed are
cached and only the nodes added since the last BatchNorm are run.

Everything random comes from generators seeded by the model seed, so the same
seed gives a byte-identical model.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

BUILDER_VERSION = "1"
PRODUCER_NAME = "hwopt-examples"

Naming = Literal["torch", "paddle", "none"]
Relu6Style = Literal["clip_inputs", "minmax"]
HardSwishStyle = Literal["op", "hardsigmoid_mul", "torch_legacy"]
Activation = Literal["relu", "relu6", "hardswish", "hardsigmoid", "silu", "sigmoid", "prelu"]

# paddle2onnx-like node kinds; other ops fall back to snake_case of the op type.
_PADDLE_KINDS = {
    "Conv": "conv2d",
    "BatchNormalization": "batch_norm",
    "Add": "elementwise_add",
    "Mul": "elementwise_mul",
    "Div": "elementwise_div",
    "Min": "elementwise_min",
    "Max": "elementwise_max",
    "GlobalAveragePool": "pool2d",
    "MaxPool": "pool2d",
    "Gemm": "linear",
    "MatMul": "matmul_v2",
    "Reshape": "reshape2",
    "Transpose": "transpose2",
    "HardSwish": "hard_swish",
    "HardSigmoid": "hard_sigmoid",
}

# Significant digits kept in calibrated BN statistics: absorbs last-bit
# differences between CPUs so that a seed gives the same file on any machine.
_STAT_DIGITS = 4
# Pseudo-samples of the pooled (all-channel) variance mixed into each
# channel's observed variance; negligible on real-sized feature maps.
_VAR_PRIOR_SAMPLES = 32


@dataclass(frozen=True)
class Habits:
    """Exporter habits a model is built with (see the module docstring)."""

    weights_as_constant_nodes: bool = False
    unfused_bn: bool = True  # False folds each BN into its conv at build time
    dynamic_batch: bool = False
    batch_dim: str = "N"  # name of the symbolic batch dimension
    relu6_style: Relu6Style = "clip_inputs"
    hardswish_style: HardSwishStyle = "op"
    identity_nodes: bool = False
    naming: Naming = "torch"


def _snake(op_type: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op_type).lower()


def _round_sig(a: np.ndarray, digits: int) -> np.ndarray:
    """Round to `digits` significant digits (elementwise, zeros kept)."""
    a = np.asarray(a, dtype=np.float64)
    mag = np.floor(np.log10(np.where(a == 0, 1.0, np.abs(a))))
    scale = 10.0 ** (digits - 1 - mag)
    return np.round(a * scale) / scale


class GraphBuilder:
    """Builds one ONNX model layer by layer; see the module docstring.

    Layer methods take tensor names and return the name of their output.
    `module` arguments are torch-style module paths relative to the current
    scope (``"conv.0.0"``); they only shape node and weight names.
    """

    def __init__(
        self,
        name: str,
        opset: int,
        seed: int = 0,
        habits: Habits | None = None,
        calib_batch: int = 2,
    ) -> None:
        if opset < 11:
            raise ValueError(f"opset {opset} < 11 is not supported")
        self.name = name
        self.opset = opset
        self.seed = seed
        self.habits = habits or Habits()
        self.calib_batch = calib_batch
        self.rng = np.random.default_rng(seed)
        # A separate stream for calibration data so that adding an input does
        # not shift every weight drawn after it.
        self._calib_rng = np.random.default_rng([seed, 0xCA1B])
        self._nodes: list[onnx.NodeProto] = []
        self._consts: dict[str, np.ndarray] = {}
        self._const_by_key: dict[tuple, str] = {}
        self._inputs: list[tuple[str, tuple[int, ...]]] = []
        self._outputs: list[str] = []
        self._values: dict[str, np.ndarray] = {}  # calibration cache
        self._n_evaluated = 0  # nodes[:n] have their outputs in _values
        self._channels: dict[str, int] = {}
        self._scope: list[str] = []
        self._node_names: set[str] = set()
        self._tensor_names: set[str] = set()
        self._kind_counts: Counter[str] = Counter()
        self._anon_count = 0
        self._session_runs = 0

    # ------------------------------------------------------------------ naming
    @contextlib.contextmanager
    def scope(self, module: str | None) -> Iterator[None]:
        """Enter a (dotted) module path, e.g. ``"features.3"``."""
        parts = module.split(".") if module else []
        self._scope.extend(parts)
        try:
            yield
        finally:
            del self._scope[len(self._scope) - len(parts) :]

    def _torch_prefix(self) -> str:
        # torch renders numeric children as "<parent>.<i>":
        # features.3.conv.0 -> /features/features.3/conv/conv.0
        rendered: list[str] = []
        for part in self._scope:
            if part.isdigit() and rendered:
                rendered.append(f"{rendered[-1]}.{part}")
            else:
                rendered.append(part)
        return "".join("/" + r for r in rendered)

    def _node_name(self, op_type: str, paddle_kind: str | None = None) -> str:
        naming = self.habits.naming
        if naming == "none":
            return ""
        if naming == "paddle":
            kind = paddle_kind or _PADDLE_KINDS.get(op_type, _snake(op_type))
            name = f"{kind}_{self._kind_counts[kind]}"
            self._kind_counts[kind] += 1
        else:
            base = f"{self._torch_prefix()}/{op_type}"
            name, k = base, 0
            while name in self._node_names:
                k += 1
                name = f"{base}_{k}"
        self._node_names.add(name)
        return name

    def _unique_tensor(self, name: str) -> str:
        base, k = name, 0
        while name in self._tensor_names:
            k += 1
            name = f"{base}_{k}"
        self._tensor_names.add(name)
        return name

    def _output_name(self, node_name: str, i: int) -> str:
        if self.habits.naming == "paddle":
            return self._unique_tensor(f"{node_name}.tmp_{i}")
        if self.habits.naming == "torch":
            return self._unique_tensor(f"{node_name}_output_{i}")
        # old torch exports: plain numbers
        self._anon_count += 1
        return self._unique_tensor(str(self._anon_count))

    def _param(self, node_name: str, torch_suffix: str, paddle_suffix: str, value: np.ndarray) -> str:
        """Register a weight tensor under an exporter-like name."""
        if self.habits.naming == "paddle":
            name = f"{node_name}.{paddle_suffix}"
        else:
            name = ".".join([*self._scope, torch_suffix])
        name = self._unique_tensor(name)
        self._consts[name] = value
        return name

    def const(self, value: np.ndarray | float | Sequence[float], dtype: type = np.float32) -> str:
        """A shared constant tensor (Clip bounds, shapes, scales, ...)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_by_key:
            k = len(self._const_by_key)
            if self.habits.naming == "paddle":
                name = f"fill_constant_{k}.tmp_0"
            else:
                name = f"onnx::Constant_{k}"
            name = self._unique_tensor(name)
            self._consts[name] = arr
            self._const_by_key[key] = name
        return self._const_by_key[key]

    # ------------------------------------------------------------------ emit
    def _emit(
        self,
        op_type: str,
        inputs: Sequence[str],
        node_name: str | None = None,
        n_out: int = 1,
        **attrs: object,
    ) -> str:
        if node_name is None:
            node_name = self._node_name(op_type)
        outputs = [self._output_name(node_name, i) for i in range(n_out)]
        node = helper.make_node(op_type, list(inputs), outputs, name=node_name or None, **attrs)
        self._nodes.append(node)
        return outputs[0]

    def channels(self, x: str) -> int:
        """Channel count (dim 1) of an NCHW tensor made by this builder."""
        return self._channels[x]

    def _keep_channels(self, out: str, like: str) -> str:
        if like in self._channels:
            self._channels[out] = self._channels[like]
        return out

    # ------------------------------------------------------------------ io
    def input(self, name: str, channels: int, height: int, width: int) -> str:
        """Declare an NCHW float image input; calibration data is N(0, 1)."""
        self._tensor_names.add(name)
        shape = (self.calib_batch, channels, height, width)
        self._inputs.append((name, (channels, height, width)))
        self._values[name] = self._calib_rng.standard_normal(shape).astype(np.float32)
        self._channels[name] = channels
        return name

    def input_nhwc(self, name: str, channels: int, height: int, width: int) -> str:
        """Declare an NHWC float image input, as TensorFlow exporters (tf2onnx) leave it, and return the
        Transpose to NCHW they put after it; calibration data is N(0, 1)."""
        self._tensor_names.add(name)
        self._inputs.append((name, (height, width, channels)))
        self._values[name] = self._calib_rng.standard_normal((self.calib_batch, height, width, channels)).astype(np.float32)
        out = self.transpose(name, (0, 3, 1, 2))
        self._channels[out] = channels
        return out

    def output(self, x: str, name: str) -> str:
        """Mark `x` as a graph output, renamed to `name`."""
        if name != x:
            if name in self._tensor_names:
                raise ValueError(f"tensor name {name!r} already used")
            if any(x == n for n, _ in self._inputs):
                raise ValueError(f"graph input {x!r} cannot be renamed to an output")
            for node in self._nodes:
                for seq in (node.input, node.output):
                    for i, t in enumerate(seq):
                        if t == x:
                            seq[i] = name
            if x in self._values:
                self._values[name] = self._values.pop(x)
            self._tensor_names.add(name)
            self._keep_channels(name, x)
        self._outputs.append(name)
        return name

    # ------------------------------------------------------------------ calibration
    def _evaluate(self) -> None:
        """Run the nodes added since the last evaluation; cache all outputs."""
        pending = self._nodes[self._n_evaluated :]
        if not pending:
            return
        produced = [o for n in pending for o in n.output if o]
        produced_set = set(produced)
        feeds: dict[str, np.ndarray] = {}
        inits: dict[str, np.ndarray] = {}
        for node in pending:
            for t in node.input:
                if not t or t in produced_set:
                    continue
                if t in self._consts:
                    inits[t] = self._consts[t]
                else:
                    feeds[t] = self._values[t]
        graph = helper.make_graph(
            pending,
            "calibration",
            [helper.make_tensor_value_info(t, TensorProto.FLOAT, v.shape) for t, v in feeds.items()],
            [helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in produced],
            initializer=[numpy_helper.from_array(v, t) for t, v in inits.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        results = sess.run(produced, feeds)
        self._values.update(zip(produced, results))
        self._n_evaluated = len(self._nodes)
        self._session_runs += 1

    def value(self, x: str) -> np.ndarray:
        """The calibration-batch value of tensor `x` (evaluates if needed)."""
        if x not in self._values:
            self._evaluate()
        return self._values[x]

    def _bn_params(self, x: str) -> tuple[np.ndarray, ...]:
        """Realistic BN parameters from the observed statistics of `x`."""
        data = self.value(x).astype(np.float64)
        n = data.shape[0] * data.shape[2] * data.shape[3]  # samples per channel
        mean = data.mean(axis=(0, 2, 3))
        var = data.var(axis=(0, 2, 3), ddof=1 if n > 1 else 0)
        # On tiny maps (2 images x 1x1 in SSD extras) per-channel variance is
        # noise; shrink it towards the layer's pooled variance, else the BN
        # blows activations up by 1000x on any other input.
        var = (n * var + _VAR_PRIOR_SAMPLES * var.mean()) / (n + _VAR_PRIOR_SAMPLES) + 1e-6
        c = mean.shape[0]
        gamma = self.rng.uniform(0.5, 1.5, c)
        beta = self.rng.uniform(-0.2, 0.2, c)
        mean = mean + self.rng.normal(0.0, 0.05, c) * np.sqrt(var)
        var = var * self.rng.uniform(0.8, 1.25, c)
        return tuple(
            _round_sig(a, _STAT_DIGITS).astype(np.float32) for a in (gamma, beta, mean, var)
        )

    # ------------------------------------------------------------------ layers
    def conv(
        self,
        x: str,
        cout: int,
        k: int,
        stride: int = 1,
        pad: int | None = None,
        groups: int = 1,
        dilation: int = 1,
        bias: bool = False,
        module: str | None = None,
    ) -> str:
        """Conv2d with He-normal weights; `pad` defaults to 'same'-like."""
        cin = self.channels(x)
        if cin % groups or cout % groups:
            raise ValueError(f"channels {cin}->{cout} not divisible by groups={groups}")
        pad = (k // 2) * dilation if pad is None else pad
        kind = "depthwise_conv2d" if groups > 1 and groups == cin else "conv2d"
        with self.scope(module):
            name = self._node_name("Conv", kind)
            fan_in = cin // groups * k * k
            w = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)
            inputs = [x, self._param(name, "weight", "w_0", w.astype(np.float32))]
            if bias:
                b = self.rng.uniform(-0.1, 0.1, cout).astype(np.float32)
                inputs.append(self._param(name, "bias", "b_0", b))
            out = self._emit(
                "Conv",
                inputs,
                name,
                dilations=[dilation, dilation],
                group=groups,
                kernel_shape=[k, k],
                pads=[pad] * 4,
                strides=[stride, stride],
            )
        self._channels[out] = cout
        return out

    def batchnorm(self, x: str, module: str | None = None) -> str:
        """BatchNormalization with calibrated statistics (see module docstring)."""
        gamma, beta, mean, var = self._bn_params(x)
        eps = 1e-5
        if not self.habits.unfused_bn:
            return self._fold_bn_into_conv(x, gamma, beta, mean, var, eps)
        with self.scope(module):
            name = self._node_name("BatchNormalization")
            inputs = [
                x,
                self._param(name, "weight", "w_0", gamma),
                self._param(name, "bias", "b_0", beta),
                self._param(name, "running_mean", "w_1", mean),
                self._param(name, "running_var", "w_2", var),
            ]
            out = self._emit("BatchNormalization", inputs, name, epsilon=eps, momentum=0.9)
        return self._keep_channels(out, x)

    def _fold_bn_into_conv(
        self, x: str, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float
    ) -> str:
        """The fused-BN habit: bake the BN into the conv that produced `x`."""
        conv = self._nodes[-1]
        if conv.op_type != "Conv" or conv.output[0] != x:
            raise ValueError("fused BN needs the BN input to be the last conv's output")
        scale = gamma / np.sqrt(var + eps)
        w_name = conv.input[1]
        self._consts[w_name] = (self._consts[w_name] * scale[:, None, None, None]).astype(np.float32)
        old_bias = self._consts[conv.input[2]] if len(conv.input) > 2 else 0.0
        bias = ((old_bias - mean) * scale + beta).astype(np.float32)
        if len(conv.input) > 2:
            self._consts[conv.input[2]] = bias
        else:
            b_name = re.sub(r"(\.weight|\.w_0)$", "", w_name)
            b_name = self._unique_tensor(b_name + (".b_0" if w_name.endswith(".w_0") else ".bias"))
            self._consts[b_name] = bias
            conv.input.append(b_name)
        # The cached conv output is stale now: re-run the conv next time.
        del self._values[x]
        self._n_evaluated = min(self._n_evaluated, len(self._nodes) - 1)
        return x

    def relu(self, x: str, module: str | None = None) -> str:
        with self.scope(module):
            return self._keep_channels(self._emit("Relu", [x]), x)

    def sigmoid(self, x: str, module: str | None = None) -> str:
        with self.scope(module):
            return self._keep_channels(self._emit("Sigmoid", [x]), x)

    def relu6(self, x: str, module: str | None = None) -> str:
        with self.scope(module):
            if self.habits.relu6_style == "minmax":
                y = self._emit("Min", [x, self.const(6.0)])
                out = self._emit("Max", [y, self.const(0.0)])
            else:
                name = self._node_name("Clip", "relu6")
                out = self._emit("Clip", [x, self.const(0.0), self.const(6.0)], name)
        return self._keep_channels(out, x)

    def prelu(self, x: str, module: str | None = None) -> str:
        """PReLU with one learned slope per channel (as Keras/TFLite nets such as MediaPipe's carry), drawn
        from [0.05, 0.5]: a slope shared by all channels would be a LeakyRelu."""
        channels = self.channels(x)
        slope = self.rng.uniform(0.05, 0.5, (channels, 1, 1)).astype(np.float32)
        with self.scope(module):
            name = self._node_name("PRelu", "prelu")
            out = self._emit("PRelu", [x, self._param(name, "weight", "alpha_0", slope)], name)
        return self._keep_channels(out, x)

    def hardsigmoid(self, x: str, module: str | None = None) -> str:
        """torch's hardsigmoid: relu6(x + 3) / 6."""
        with self.scope(module):
            out = self._emit("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
        return self._keep_channels(out, x)

    def hardswish(self, x: str, module: str | None = None, style: HardSwishStyle | None = None) -> str:
        style = style or self.habits.hardswish_style
        with self.scope(module):
            if style == "op":
                if self.opset < 14:
                    raise ValueError("HardSwish needs opset >= 14")
                out = self._emit("HardSwish", [x])
            elif style == "hardsigmoid_mul":
                hs = self._emit("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
                out = self._emit("Mul", [x, hs])
            elif style == "torch_legacy":
                y = self._emit("Add", [x, self.const(3.0)])
                y = self._emit("Clip", [y, self.const(0.0), self.const(6.0)])
                y = self._emit("Div", [y, self.const(6.0)])
                out = self._emit("Mul", [x, y])
            else:
                raise ValueError(f"unknown hardswish style {style!r}")
        return self._keep_channels(out, x)

    def silu(self, x: str, module: str | None = None) -> str:
        with self.scope(module):
            s = self._emit("Sigmoid", [x])
            out = self._emit("Mul", [x, s])
        return self._keep_channels(out, x)

    def act(
        self,
        x: str,
        kind: Activation | None,
        module: str | None = None,
        hardswish_style: HardSwishStyle | None = None,
    ) -> str:
        """Apply activation `kind` (None: identity, no node)."""
        if kind is None:
            return x
        if kind == "hardswish":
            return self.hardswish(x, module, hardswish_style)
        fn = {
            "relu": self.relu,
            "relu6": self.relu6,
            "hardsigmoid": self.hardsigmoid,
            "silu": self.silu,
            "sigmoid": self.sigmoid,
            "prelu": self.prelu,
        }[kind]
        return fn(x, module)

    def add(self, a: str, b: str, module: str | None = None) -> str:
        with self.scope(module):
            return self._keep_channels(self._emit("Add", [a, b]), a)

    def mul(self, a: str, b: str, module: str | None = None) -> str:
        with self.scope(module):
            return self._keep_channels(self._emit("Mul", [a, b]), a)

    def identity(self, x: str, module: str | None = None) -> str:
        """An Identity node, only with the `identity_nodes` habit."""
        if not self.habits.identity_nodes:
            return x
        with self.scope(module):
            return self._keep_channels(self._emit("Identity", [x]), x)

    def global_avg_pool(self, x: str, module: str | None = None) -> str:
        with self.scope(module):
            return self._keep_channels(self._emit("GlobalAveragePool", [x]), x)

    def maxpool(self, x: str, k: int = 3, stride: int = 2, pad: int = 1, module: str | None = None) -> str:
        with self.scope(module):
            out = self._emit(
                "MaxPool", [x], ceil_mode=0, kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride]
            )
        return self._keep_channels(out, x)

    def concat(self, xs: Sequence[str], axis: int = 1, module: str | None = None) -> str:
        with self.scope(module):
            out = self._emit("Concat", list(xs), axis=axis)
        if axis == 1 and all(x in self._channels for x in xs):
            self._channels[out] = sum(self._channels[x] for x in xs)
        return out

    def resize(
        self,
        x: str,
        scale: float = 2.0,
        mode: Literal["nearest", "linear"] = "nearest",
        module: str | None = None,
    ) -> str:
        """Upsample H and W by `scale` with torch-like Resize attributes."""
        scales = self.const([1.0, 1.0, scale, scale])
        # Resize-11 requires roi and scales inputs; from 13 on roi may be "".
        roi = self.const(np.zeros(0, np.float32)) if self.opset < 13 else ""
        if mode == "nearest":
            attrs = dict(coordinate_transformation_mode="asymmetric", mode="nearest", nearest_mode="floor")
        else:
            attrs = dict(coordinate_transformation_mode="pytorch_half_pixel", mode="linear")
        with self.scope(module):
            name = self._node_name("Resize", f"{'nearest' if mode == 'nearest' else 'bilinear'}_interp_v2")
            out = self._emit("Resize", [x, roi, scales], name, **attrs)
        return self._keep_channels(out, x)

    def reshape(self, x: str, shape: Sequence[int], module: str | None = None) -> str:
        """Reshape; use 0 for the batch dim so it works with any batch."""
        with self.scope(module):
            return self._emit("Reshape", [x, self.const(list(shape), np.int64)])

    def transpose(self, x: str, perm: Sequence[int], module: str | None = None) -> str:
        with self.scope(module):
            return self._emit("Transpose", [x], perm=list(perm))

    def softmax(self, x: str, axis: int = -1, module: str | None = None) -> str:
        with self.scope(module):
            return self._emit("Softmax", [x], axis=axis)

    def flatten(self, x: str, module: str | None = None) -> str:
        with self.scope(module):
            out = self._emit("Flatten", [x], axis=1)
        return self._keep_channels(out, x)

    def linear(
        self,
        x: str,
        nout: int,
        style: Literal["gemm", "matmul_add"] = "gemm",
        module: str | None = None,
    ) -> str:
        """Fully connected layer on a (N, C) tensor: Gemm(transB=1) like torch,
        or MatMul + Add like paddle2onnx."""
        nin = self.channels(x)
        w = (self.rng.standard_normal((nout, nin)) * np.sqrt(1.0 / nin)).astype(np.float32)
        b = self.rng.uniform(-0.1, 0.1, nout).astype(np.float32)
        with self.scope(module):
            if style == "gemm":
                name = self._node_name("Gemm")
                inputs = [x, self._param(name, "weight", "w_0", w), self._param(name, "bias", "b_0", b)]
                out = self._emit("Gemm", inputs, name, alpha=1.0, beta=1.0, transB=1)
            else:
                name = self._node_name("MatMul")
                w_t = self._param(name, "weight", "w_0", np.ascontiguousarray(w.T))
                y = self._emit("MatMul", [x, w_t], name)
                add_name = self._node_name("Add")
                out = self._emit("Add", [y, self._param(add_name, "bias", "b_0", b)], add_name)
        self._channels[out] = nout
        return out

    # ------------------------------------------------------------------ blocks
    def conv_bn_act(
        self,
        x: str,
        cout: int,
        k: int,
        stride: int = 1,
        groups: int = 1,
        act: Activation | None = "relu",
        module: str | None = None,
        hardswish_style: HardSwishStyle | None = None,
        dilation: int = 1,
    ) -> str:
        """torchvision's Conv2dNormActivation: children 0 (conv), 1 (bn), 2 (act)."""
        with self.scope(module):
            y = self.conv(x, cout, k, stride, groups=groups, dilation=dilation, module="0")
            y = self.batchnorm(y, module="1")
            return self.act(y, act, module="2", hardswish_style=hardswish_style)

    def squeeze_excite(self, x: str, squeeze: int, module: str | None = None) -> str:
        """GAP -> 1x1 conv reduce -> ReLU -> 1x1 conv expand -> HardSigmoid -> Mul
        (torchvision's SqueezeExcitation naming)."""
        c = self.channels(x)
        with self.scope(module):
            s = self.global_avg_pool(x, module="avgpool")
            s = self.conv(s, squeeze, 1, bias=True, module="fc1")
            s = self.relu(s, module="activation")
            s = self.conv(s, c, 1, bias=True, module="fc2")
            s = self.hardsigmoid(s, module="scale_activation")
            return self.mul(x, s)

    def inverted_bottleneck(
        self,
        x: str,
        cout: int,
        k: int = 3,
        stride: int = 1,
        expand: float = 6.0,
        act: Activation = "relu6",
        hidden: int | None = None,
        se_squeeze: int | None = None,
        layout: Literal["v2", "v3"] = "v2",
        module: str | None = None,
        hardswish_style: HardSwishStyle | None = None,
        return_expanded: bool = False,
    ) -> str | tuple[str, str]:
        """1x1 expand conv+BN+act -> KxK depthwise conv+BN+act -> [SE] ->
        1x1 project conv+BN, with a residual Add when stride is 1 and cin ==
        cout. The expand conv is omitted when the hidden width equals cin.

        Naming follows torchvision: layout "v2" is MobileNetV2's
        ``conv.{0,1,2,3}`` (project conv and BN as separate children), "v3"
        is MobileNetV3's ``block.{0,1,2,3}`` (SE a child, project a
        Conv2dNormActivation). With `return_expanded` also returns the
        expanded activation (SSDLite taps it); it is the block input when
        there is no expand conv.
        """
        cin = self.channels(x)
        hidden = hidden if hidden is not None else int(round(cin * expand))
        container = "conv" if layout == "v2" else "block"
        idx = 0

        def child() -> str:
            nonlocal idx
            idx += 1
            return f"{container}.{idx - 1}"

        with self.scope(module):
            y = x
            if hidden != cin:
                y = self.conv_bn_act(y, hidden, 1, act=act, module=child(), hardswish_style=hardswish_style)
            expanded = y
            y = self.conv_bn_act(
                y, hidden, k, stride, groups=hidden, act=act, module=child(), hardswish_style=hardswish_style
            )
            if se_squeeze:
                y = self.squeeze_excite(y, se_squeeze, module=child())
            if layout == "v2":
                y = self.conv(y, cout, 1, module=child())
                y = self.batchnorm(y, module=child())
            else:
                y = self.conv_bn_act(y, cout, 1, act=None, module=child())
            if stride == 1 and cin == cout:
                y = self.add(x, y)
        return (y, expanded) if return_expanded else y

    # ------------------------------------------------------------------ build
    def _materialize(self) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
        """Final node list and initializers, with weights as initializers or
        as Constant nodes placed just before their first consumer."""
        used = [t for n in self._nodes for t in n.input if t in self._consts]
        used = list(dict.fromkeys(used))
        if not self.habits.weights_as_constant_nodes:
            return list(self._nodes), [numpy_helper.from_array(self._consts[t], t) for t in used]
        # A local counter keeps build() repeatable (no shared name state used).
        prefix = {"paddle": "assign_value_", "torch": "/Constant_", "none": ""}[self.habits.naming]
        nodes: list[onnx.NodeProto] = []
        emitted: set[str] = set()
        for node in self._nodes:
            for t in node.input:
                if t in self._consts and t not in emitted:
                    name = f"{prefix}{len(emitted)}" if prefix else None
                    emitted.add(t)
                    tensor = numpy_helper.from_array(self._consts[t], t)
                    nodes.append(helper.make_node("Constant", [], [t], name=name, value=tensor))
            nodes.append(node)
        return nodes, []

    def _value_info(self, name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
        batch: int | str = self.habits.batch_dim if self.habits.dynamic_batch else 1
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, *shape])

    def build(self, doc: str = "") -> onnx.ModelProto:
        """The finished model, checked with the full ONNX checker."""
        if not self._outputs:
            raise ValueError("no graph outputs declared")
        self._evaluate()  # also proves the whole graph runs in onnxruntime
        inputs = [self._value_info(n, s) for n, s in self._inputs]
        outputs = [self._value_info(n, self._values[n].shape[1:]) for n in self._outputs]
        nodes, inits = self._materialize()
        graph = helper.make_graph(nodes, self.name, inputs, outputs, initializer=inits)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER_NAME)
        model.producer_version = BUILDER_VERSION
        # The lowest IR version for the opset, as exporters write it.
        model.ir_version = helper.find_min_ir_version_for(opsets)
        model.doc_string = doc
        helper.set_model_props(model, {"hwopt.example": self.name, "hwopt.seed": str(self.seed)})
        onnx.checker.check_model(model, full_check=True)
        return model

    @property
    def session_runs(self) -> int:
        """How many onnxruntime sessions calibration has used (for tuning)."""
        return self._session_runs
