"""Cutting a model into the kernels a target executes (``schedule``), and its memory figures.

The descriptors themselves (``Kernel``, its kinds, ``Schedule``) are in ``hwopt.analysis.kernel``; this module
reads a graph and produces them.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hwopt.analysis.activations import UNARY_ELEMENTWISE, Activation, match_activation, match_activation_chain
from hwopt.analysis.graph import Node, Tensor, constant_shape, constant_value, conv_attrs, import_graph
from hwopt.analysis.kernel import CONV_KINDS, FusionPolicy, Kernel, Schedule, ScheduledKernel
from hwopt.analysis.layer_norm import match_layer_norm, normalized_length
from hwopt.analysis.layout import mark_reorders


_ELTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu", "Where", "And", "Or", "Equal"}
_ACT = UNARY_ELEMENTWISE | {"Clip", "BatchNormalization", "InstanceNormalization", "Sqrt", "Reciprocal", "Cast",
                            "Floor", "Ceil", "Round", "Log", "Sin", "Cos", "Not"}
_POOL = {"MaxPool", "AveragePool", "LpPool"}
_REDUCE = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2",
           "ArgMax", "ArgMin", "TopK"}
_RESIZE = {"Resize", "Upsample"}
_SOFTMAX = {"Softmax", "LogSoftmax"}
_NORM = {"LayerNormalization"}
_LAYOUT = {"Transpose", "Pad", "Slice", "Split", "Gather", "Tile", "Expand", "DepthToSpace", "SpaceToDepth",
           "ScatterND", "GatherElements"}
_VIEW = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Constant",
         "ConstantOfShape", "Size"}


def _dims(tensor: Tensor) -> list[int]:
    shape = tensor.shape or []
    return [d if isinstance(d, int) and d > 0 else 1 for d in shape]


def _geometry(tensor: Tensor) -> tuple[int, int, int]:
    """(channels, h, w) per sample; non-4-D tensors are (values, 1, 1)."""
    dims = _dims(tensor)
    if len(dims) == 4:
        return dims[1], dims[2], dims[3]
    values = int(np.prod(dims[1:])) if len(dims) > 1 else int(np.prod(dims) or 1)
    return max(values, 1), 1, 1


def _dtype_bytes(tensor: Tensor) -> int:
    try:
        return np.dtype(tensor.dtype).itemsize if tensor.dtype is not None else 4
    except TypeError:
        return 4


def _variables(node: Node) -> list[Tensor]:
    return [t for t in node.inputs if isinstance(t, gs.Variable) and t.name]


# Multi-node activations that stand alone (after a Reshape, not fused into a gemm) yet run as one kernel:
# onnxruntime fuses GELU's Erf spelling into its Gelu kernel, an NPU's vector unit applies it in one pass.
FUSED_STANDALONE = {"gelu": "Gelu"}


def _standalone_fused_activation(node: Node) -> Activation | None:
    """The multi-node activation of a FUSED_STANDALONE kind that starts at ``node``, or None."""
    if node.op not in ("Div", "Mul") or not node.inputs:
        return None
    act = match_activation(node.inputs[0])
    if act is None or act.kind not in FUSED_STANDALONE or act.nodes[0] is not node:
        return None
    return act if all(user in act.nodes for user in node.inputs[0].outputs) else None


def _samples(graph: gs.Graph) -> int:
    """The model's sample count (the first input's first dim; 1 when unknown): figures are per sample."""
    dims = graph.inputs[0].shape if graph.inputs else None
    first = dims[0] if dims else 1
    return first if isinstance(first, int) and first > 0 else 1


def _kind_of(node: Node) -> str:
    op = node.op
    if op in _ELTWISE:
        return "eltwise" if len(_variables(node)) > 1 else "act"
    for kind, ops in (("act", _ACT), ("pool", _POOL), ("reduce", _REDUCE), ("resize", _RESIZE),
                      ("softmax", _SOFTMAX), ("norm", _NORM), ("layout", _LAYOUT), ("view", _VIEW)):
        if op in ops:
            return kind
    if op == "Concat":
        return "concat"
    return "unknown"


def weight_zeros(tensor: Tensor, axis: int) -> int:
    """Percent, in steps of 10, of a constant weight's values that round to zero in symmetric int8 per
    output channel along ``axis`` (as hwopt's TFLite writer quantises them: |w| under half a step of the
    channel's peak / 127); 0 when the weight is not a constant. ``Kernel.weight_zeros`` says why it matters.

    All-zero output channels and input channels are left out: they are channel padding, which the
    geometry already counts (``align-channels`` pads with them), not pruning. So a padded kernel keeps
    the figure of the kernel it pads, and the search can describe it without writing it.
    """
    value = constant_value(tensor)
    if value is None or value.size == 0 or value.ndim < 2 or not np.issubdtype(value.dtype, np.floating):
        return 0
    moved = np.abs(np.moveaxis(value, axis, 0).astype(np.float32))
    moved = moved.reshape(moved.shape[0], moved.shape[1], -1)  # out channels, in channels, taps
    peak = moved.max(axis=(1, 2), keepdims=True)
    zeros = (moved * (2 * 127) < peak) | (peak == 0)
    rows, cols = ~zeros.all(axis=(1, 2)), ~zeros.all(axis=(0, 2))
    live = zeros[rows][:, cols]
    return int(np.round(float(live.mean()) * 10)) * 10 if live.size else 0


def _conv_kernel(node: Node) -> Kernel | None:
    attrs = conv_attrs(node)
    if attrs is None:
        return None
    cin, h, w = _geometry(node.inputs[0])
    _, oh, ow = _geometry(node.outputs[0])
    if attrs.is_depthwise:
        kind = "dwconv"
    elif attrs.group == 1:
        kind = "conv"
    else:
        kind = "gconv"
    kh, kw = attrs.kernel
    dilation = max(attrs.dilations)
    if dilation > 1 and _only_centre_reads_input(attrs, h, w, oh, ow):
        kh = kw = 1  # every other tap only ever reads padding: the conv computes as a 1x1 conv
    return Kernel(kind, attrs.in_channels, attrs.out_channels, h, w, oh, ow, kh, kw,
                  attrs.strides[0], attrs.group, dtype_bytes=_dtype_bytes(node.outputs[0]),
                  weight_zeros=weight_zeros(node.inputs[1], 0), dilation=dilation if kh * kw > 1 else 1)


def transposed_conv_kernel(node: Node) -> Kernel | None:
    """A 2-D ConvTranspose as its sub-pixel conv (module docstring), or None when we cannot tell its geometry.

    Output row o of a stride-s transposed conv takes the taps w[r], w[r + s], ... (r = (o + pad) mod s),
    so the s x s output phases are s^2 convs over the input with kernels of ceil(k / s) taps, stride 1:
    one conv producing s^2 times the channels at 1/s of the output size. The MACs are the transposed
    conv's own (exactly when s divides k; else the short phases' kernels are padded with zero taps),
    not the s^2 times more of a conv over the zero-inserted input.
    """
    weight = constant_shape(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None or len(weight) != 4 or any(int(d) != 1 for d in node.attrs.get("dilations", (1, 1))):
        return None
    group = int(node.attrs.get("group", 1))
    cin, cout = weight[0], weight[1] * group  # ConvTranspose weights are (cin, cout / group, kh, kw)
    kh, kw = (int(k) for k in node.attrs.get("kernel_shape", weight[2:]))
    sh, sw = (int(v) for v in node.attrs.get("strides", (1, 1)))
    _, h, w = _geometry(node.inputs[0])
    out = _dims(node.outputs[0])
    if len(out) != 4 or len(_dims(node.inputs[0])) != 4:
        return None
    phases = sh * sw
    oh, ow = math.ceil(out[2] / sh), math.ceil(out[3] / sw)
    kind = "conv" if group == 1 else "dwconv" if group == cin else "gconv"
    return Kernel(kind, cin, cout * phases, h, w, oh, ow, math.ceil(kh / sh), math.ceil(kw / sw), 1, group,
                  op="ConvTranspose", dtype_bytes=_dtype_bytes(node.outputs[0]),
                  weight_zeros=weight_zeros(node.inputs[1], 1))


def _only_centre_reads_input(attrs, h: int, w: int, oh: int, ow: int) -> bool:
    """Whether a dilated conv's off-centre taps all fall in the padding for every output position.

    Atrous convs of segmentation heads (DeepLab's ASPP: dilation 24 and 36 on a 14x14 map) are
    1x1 convs in effect, and runtimes time them so (onnxruntime: 962 us against 4911 us for the same
    3x3 conv undilated); describing them as full 3x3 convs overstated DeepLabV3 by 60%.
    """
    for size, out, k, stride, dilation, pad in ((h, oh, attrs.kernel[0], attrs.strides[0], attrs.dilations[0],
                                                  attrs.pads[0]),
                                                 (w, ow, attrs.kernel[1], attrs.strides[1], attrs.dilations[1],
                                                  attrs.pads[1])):
        if k % 2 == 0 or pad != dilation * (k // 2):
            return False  # not a centred ("same"-style) dilated window
        for tap in range(k):
            if tap == k // 2:
                continue
            first = -pad + tap * dilation
            last = (out - 1) * stride - pad + tap * dilation
            if last >= 0 and first < size:
                return False  # this tap reads the input somewhere
    return True


def _gemm_kernel(node: Node, samples: int = 1) -> Kernel:
    """A Gemm / MatMul: rows x cin -> cout per product, ``groups`` products (batch dims of a MatMul whose
    second operand has them: attention's heads), ``inputs`` 2 when that operand is an activation.

    Rows are every output row of one sample: a 2-D Gemm's first dim is the model's sample count times
    the rows (onnxruntime's MatMul+Add fusion reshapes a [1, 40, 120] MatMul input to [40, 120]).
    """
    x = _dims(node.inputs[0])
    y = _dims(node.outputs[0])
    operand = node.inputs[1]
    weight = constant_shape(operand)
    b = weight if weight is not None else _dims(operand)
    if node.op == "Gemm":
        k = (x[0] if int(node.attrs.get("transA", 0)) else x[-1]) if x else 1
        m = y[-1] if y else 1
        stacked = 1
    else:
        k, m = (x[-1] if x else 1), (y[-1] if y else 1)
        stacked = int(np.prod(y[:-2])) if len(b) > 2 and len(y) > 2 else 1  # independent products
    rows = int(np.prod(y[:-1])) if len(y) > 1 else 1
    if samples > 1 and rows % samples == 0:
        rows //= samples
        stacked = stacked // samples if stacked % samples == 0 else stacked
    # The weight's output axis: Gemm's B is (K, N), or (N, K) with transB; a MatMul's is its last.
    out_axis = 0 if node.op == "Gemm" and int(node.attrs.get("transB", 0)) else -1
    return Kernel("gemm", int(k), int(m), groups=max(stacked, 1), inputs=1 if weight is not None else 2,
                  batch=max(rows, 1), op=node.op, dtype_bytes=_dtype_bytes(node.outputs[0]),
                  weight_zeros=weight_zeros(operand, out_axis) if weight is not None else 0)


def _rows_kernel(node: Node, kind: str, length: int, chain_end: Tensor) -> Kernel:
    """A softmax or norm kernel: rows of ``length`` values each (the axis it works along)."""
    values = int(np.prod(_dims(node.inputs[0])[1:] or [1]))
    length = max(min(length, values), 1)
    rows = max(values // length, 1)
    return Kernel(kind, length, length, rows, 1, rows, 1, op=node.op if kind == "softmax" else "LayerNormalization",
                  dtype_bytes=_dtype_bytes(chain_end))


def _softmax_length(node: Node, opset: int) -> int:
    """Values per softmax: the axis (opset >= 13), or everything from the axis on (older opsets' 2-D view)."""
    shape = _dims(node.inputs[0])
    if not shape:
        return 1
    axis = int(node.attrs.get("axis", -1 if opset >= 13 else 1)) % len(shape)
    return shape[axis] if opset >= 13 else int(np.prod(shape[axis:]))


def _generic_kernel(node: Node, kind: str) -> Kernel:
    variables = _variables(node)
    # An eltwise kernel is described by its output (every input as if full-size, as the tables time it):
    # its first input may be a broadcast operand, e.g. squeeze-excite's [1, C, 1, 1] gate in torchvision's
    # ``scale * input``, which made a 32x112x112 Mul look like a 32x1x1 one (3x under-estimated on cpu).
    source = node.outputs[0] if kind == "eltwise" or not variables else variables[0]
    cin, h, w = _geometry(source)
    cout, oh, ow = _geometry(node.outputs[0])
    window, stride = 1, 1
    if kind == "pool":
        shape = node.attrs.get("kernel_shape", [1, 1])
        window = int(shape[0])
        stride = int(node.attrs.get("strides", [1, 1])[0])
    if kind == "concat":
        cin = sum(_geometry(t)[0] for t in variables)
    op = prelu_form(node) if node.op == "PRelu" else constant_operand_form(node) if kind == "act" else node.op
    return Kernel(kind, cin, cout, h, w, oh, ow, window, window if kind == "pool" else 1, stride,
                  inputs=max(len(variables), 1), op=op, dtype_bytes=_dtype_bytes(node.outputs[0]))


# An elementwise op of an activation by a constant, by the constant's size. Vela takes a scalar operand in
# the op's own registers, but reads a per-channel constant (an unfolded BatchNormalization's scale or shift,
# tf2onnx's Mul and Add by [1, C, 1, 1]) from where constants live, per element: 16 times a scalar Mul's
# cycles on ethos-u55-256 at 64 channels, 194x194 (Human's age-and-gender net "gear").
BINARY_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Max", "Min")
PER_CHANNEL = "(per channel)"


def constant_operand_form(node: Node) -> str:
    """``Mul`` (scalar or unknown constant) or ``Mul(per channel)`` (a constant of more than one value), and
    the same for the other ops of ``BINARY_ELEMENTWISE``; any other op as is."""
    if node.op not in BINARY_ELEMENTWISE:
        return node.op
    sizes = [value.size for t in node.inputs if (value := constant_value(t)) is not None]
    return f"{node.op}{PER_CHANNEL}" if sizes and max(sizes) > 1 else node.op


def transpose_is_nhwc_view(node: Node, graph_outputs: set[str] = frozenset()) -> bool:
    """True when ``node`` is a Transpose read only by a view op (Reshape & co.), not a graph output, and the
    pair moves no data in NHWC storage: hwopt's TFLite writer then writes one RESHAPE
    (``hwopt.tflite.fusion``, ``hwopt.tflite.ops_shape.view``), as for the NHWC -> NCHW Transpose
    tflite2onnx and tf2onnx put before a head's Reshape."""
    from hwopt.tflite import layout
    from hwopt.tflite.fusion import VIEWS

    if node.op != "Transpose" or len(node.outputs[0].outputs) != 1 or node.outputs[0].name in graph_outputs:
        return False
    view = node.outputs[0].outputs[0]
    if view.op not in VIEWS or view.inputs[0] is not node.outputs[0]:
        return False
    if not node.inputs[0].shape or not view.outputs[0].shape:
        return False
    shape = _dims(node.inputs[0])
    order = list(node.attrs.get("perm", reversed(range(len(shape)))))
    return (layout.view_reorder(order, layout.physical_shape(shape)) is None
            and layout.same_memory_order(_dims(view.outputs[0])))


def hosts_activation(kernel: Kernel, policy: FusionPolicy) -> bool:
    """True when ``kernel`` runs the activation chain after it in the same pass under ``policy``: convs,
    gemms and elementwise ops of two activations always; pools and elementwise ops by a constant where the
    target fuses an activation onto any op (``[fusion] activation_into_any``: Vela, regor's
    ``ArchitectureOpGroup::Add``; the standalone ReLU after a MaxPool has no cycles of its own there)."""
    if kernel.kind in CONV_KINDS + ("gemm", "eltwise"):
        return True
    if not policy.activation_into_any:
        return False
    return kernel.kind == "pool" or (kernel.kind == "act" and kernel.op.split("(")[0] in BINARY_ELEMENTWISE)


# A standalone PReLU's op, by its slopes: NPU compilers lower the three cases differently. Vela 5.2
# (TFLiteGraphOptimiser::ConvertPrelu): one slope for every channel is a LeakyReLU; slopes all <= 1 are
# max(alpha * x, x), a MUL or two and a MAXIMUM; any slope over 1 (MediaPipe's palm detector: 25 of 26
# PReLUs, MTCNN) is MINIMUM, MUL, RELU and ADD, twice the cycles of the second form on ethos-u85-256.
PRELU_ONE_SLOPE = "PRelu(one slope)"
PRELU_SLOPES_OVER_1 = "PRelu(slopes over 1)"


def prelu_form(node: Node) -> str:
    """``PRelu`` (slopes all <= 1, or not constant), ``PRELU_ONE_SLOPE`` or ``PRELU_SLOPES_OVER_1``."""
    slopes = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if slopes is None or slopes.size == 0:
        return "PRelu"
    if np.all(slopes == slopes.flat[0]):
        return PRELU_ONE_SLOPE
    return PRELU_SLOPES_OVER_1 if float(slopes.max()) > 1.0 else "PRelu"


def runtime_fused_prefix(chain: list[Activation]) -> list[Activation]:
    """The part of an activation chain onnxruntime's CPU provider runs inside the conv: a constant Mul/Add
    straight after it folds into its weights (ConvMulFusion, ConvAddFusion) and one activation fuses
    (FusedConv); what follows, e.g. PP-LCNetV3's learnable affine after every hard-swish, runs as its own
    elementwise kernels (3.5 ms of PP-OCRv4 rec's 10 ms in onnxruntime's profiler)."""
    prefix: list[Activation] = []
    for act in chain:
        prefix.append(act)
        if act.kind != "affine":
            break
    return prefix


def schedule(model_or_graph: onnx.ModelProto | gs.Graph, policy: FusionPolicy = FusionPolicy()) -> Schedule:
    """The model's kernels in execution (topological) order under the target's fusion policy."""
    graph = model_or_graph if isinstance(model_or_graph, gs.Graph) else import_graph(model_or_graph)
    graph.toposort()
    consumed: set[int] = set()
    result = Schedule(
        input_bytes={t.name: int(np.prod(_dims(t)[1:] or [1])) * _dtype_bytes(t) for t in graph.inputs},
        input_dtype_bytes={t.name: _dtype_bytes(t) for t in graph.inputs},
        outputs=[t.name for t in graph.outputs],
    )
    first_nodes: list[Node] = []  # each kernel's first node (for the layout rules)
    graph_inputs = {t.name for t in graph.inputs}
    samples = _samples(graph)
    opset = int(graph.opset or 13)
    for node in graph.nodes:
        if id(node) in consumed:
            continue
        first_nodes.append(node)
        kind = _kind_of(node)
        chain = match_layer_norm(node) if node.op == "ReduceMean" else None  # several nodes, one kernel
        fused = _standalone_fused_activation(node)
        if fused is not None:  # one act kernel, as the runtime runs it (onnxruntime's GeluFusion)
            kernel = replace(_generic_kernel(node, "act"), op=FUSED_STANDALONE[fused.kind])
            chain = fused.nodes
        elif chain is not None:
            kernel = _rows_kernel(node, "norm", normalized_length(node, _dims(node.inputs[0])), chain[-1].outputs[0])
        elif node.op == "LayerNormalization":
            kernel = _rows_kernel(node, "norm", normalized_length(node, _dims(node.inputs[0])), node.outputs[0])
        elif kind == "softmax":
            kernel = _rows_kernel(node, "softmax", _softmax_length(node, opset), node.outputs[0])
        elif node.op in ("Conv", "ConvTranspose"):
            kernel = _conv_kernel(node) if node.op == "Conv" else transposed_conv_kernel(node)
            if kernel is None:
                kernel = Kernel("unknown", *_geometry(node.inputs[0])[:1], _geometry(node.outputs[0])[0],
                                op=f"{node.op}(non-constant weights, dilated or not 2-D)")
        elif node.op in ("Gemm", "MatMul"):
            kernel = _gemm_kernel(node, samples)
        else:
            kernel = _generic_kernel(node, kind)
            if kind == "unknown":
                kernel = replace(kernel, op=node.op)
        nodes = chain or [node]
        output = nodes[-1].outputs[0]
        if policy.activation and hosts_activation(kernel, policy):
            _, chain = match_activation_chain(output)  # the kernel ends where the kept part of the chain does
            if not policy.activation_chain:
                chain = runtime_fused_prefix(chain)
            if policy.separate:
                cut = next((i for i, act in enumerate(chain) if act.kind in policy.separate), len(chain))
                chain = chain[:cut]
            if chain:
                kernel = replace(kernel, act="+".join(a.kind for a in chain))
                for act in chain:
                    nodes.extend(act.nodes)
                output = chain[-1].output
        consumed.update(id(n) for n in nodes)
        if policy.nhwc_views and kernel.kind == "layout" and transpose_is_nhwc_view(node, set(result.outputs)):
            kernel = replace(kernel, kind="view")
        if kernel.kind == "view" and not policy.view_ops_free:
            kernel = replace(kernel, kind="layout")
        inputs = [t.name for t in _variables(node)]
        if inputs and inputs[0] in graph_inputs and kernel.kind not in ("view", "unknown"):
            kernel = replace(kernel, graph_input=1)  # it streams the model's input itself (Kernel.graph_input)
        result.kernels.append(ScheduledKernel(
            kernel, [n.name for n in nodes], inputs, output.name,
            int(np.prod(_dims(output)[1:] or [1])) * _dtype_bytes(output),
        ))
    if policy.chain_elementwise:
        from hwopt.analysis.chaining import chain_elementwise

        gone = set(chain_elementwise(result, graph))
        first_nodes = [node for i, node in enumerate(first_nodes) if i not in gone]
    if policy.blocked_layout:
        mark_reorders(result, first_nodes, {name: tuple(t.shape or ()) for name, t in graph.tensors().items()},
                      policy.blocked_layout)
    return result


def peak_live_bytes(sched: Schedule, pad_channels_to: int = 1, dtype_bytes: int | None = None) -> int:
    """Peak of live activation bytes over the schedule (kernel outputs, channels padded to P).

    ``dtype_bytes``: count every buffer at this element size (the target's dtype) instead of the model's.
    """
    last_use: dict[str, int] = {}
    for index, sk in enumerate(sched.kernels):
        for name in sk.inputs:
            last_use[name] = index
    final = set(sched.outputs)
    live: dict[str, int] = dict(sched.input_bytes)
    if dtype_bytes is not None:
        live = {name: size // max(sched.input_dtype_bytes.get(name, 4), 1) * dtype_bytes for name, size in live.items()}
    peak = sum(live.values())
    for index, sk in enumerate(sched.kernels):
        if sk.kernel.kind != "view":
            live[sk.output] = _padded(sk, pad_channels_to)
            if dtype_bytes is not None:
                live[sk.output] = live[sk.output] // max(sk.kernel.dtype_bytes, 1) * dtype_bytes
        else:
            # A view aliases its input: no new buffer (its input stays live as long as the view is used).
            for name in sk.inputs:
                last_use[name] = max(last_use.get(name, index), last_use.get(sk.output, index))
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= index and n not in final]:
            del live[name]
    return peak


def pad_channels(c: int, p: int) -> int:
    """``c`` rounded up to a multiple of P (the target's channel layout)."""
    return math.ceil(c / p) * p if p > 1 else c


def _padded(sk: ScheduledKernel, p: int) -> int:
    k = sk.kernel
    if p <= 1 or k.out_h * k.out_w == 1 and k.kind not in CONV_KINDS:
        return sk.output_bytes
    return sk.output_bytes * pad_channels(k.cout, p) // max(k.cout, 1)
