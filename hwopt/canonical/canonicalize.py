"""Canonicalisation: the exact clean-up every model gets before rules see it.

onnxruntime's *basic* graph optimizer already folds constants (Constant nodes
and constant subgraphs become initializers), fuses BatchNormalization and
Add/Mul into the preceding Conv and drops Identity nodes, using standard ONNX
ops only, so we build on it (until a pass changes nothing: it inlines function
ops after folding). What it lacks we do here: drop the opset domains it
declares but nothing uses, name every node so sites get stable ids, infer
shapes, spell flattening Reshapes as Flatten (canonical_reshape) and
hard-sigmoids written out with Add/Clip/Mul as HardSigmoid
(canonical_hard_sigmoid), and drop chains of view ops that end in the shape
they start from (canonical_views). The result is verified against the input
with onnxruntime.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from hwopt.io import held_weights
from hwopt.canonical.clip import minmax_to_clip
from hwopt.canonical.hard_sigmoid import hard_sigmoids
from hwopt.canonical.reshape import reshape_to_flatten
from hwopt.canonical.views import drop_view_round_trips
from hwopt.errors import HwoptError, VerificationError
from hwopt.io.model import InputShape, apply_input_shapes
from hwopt.io.shape_hint import unknown_dims_message


@dataclass
class CanonicalizationReport:
    nodes_before: int
    nodes_after: int
    ops_before: Counter
    ops_after: Counter
    seconds: float
    max_rel_error: float = 0.0
    notes: list[str] = field(default_factory=list)

    def removed(self, op: str) -> int:
        return self.ops_before.get(op, 0) - self.ops_after.get(op, 0)


def check_input_dims(model: onnx.ModelProto) -> None:
    """Every input dim but the batch (first) dim must be known to analyse the model, none may be 0,
    and one sample of the inputs must fit ``MAX_SAMPLE_BYTES``."""
    from onnx import helper

    from hwopt.io.model import MAX_SAMPLE_BYTES

    initializers = {t.name for t in model.graph.initializer}
    sample_bytes, shapes = 0, []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value == 0:
                raise HwoptError(f"dimension {axis + 1} (counted from 1) of input {value.name!r} is 0 (an empty tensor): hwopt needs "
                                 f"at least one element on every axis")
        problem = unknown_dims_message(value, model)
        if problem:
            raise HwoptError(problem)
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 4
        sample_bytes += itemsize * int(np.prod([d.dim_value for d in dims[1:]], dtype=object))
        shapes.append(f"{value.name}: " + "x".join(str(d.dim_value) if d.HasField("dim_value") else "N"
                                                   for d in dims))
    if sample_bytes > MAX_SAMPLE_BYTES:
        raise HwoptError(f"one sample of the inputs needs {sample_bytes / 2**30:,.0f} GiB ({'; '.join(shapes)}); "
                         f"hwopt runs dozens of samples and takes at most {MAX_SAMPLE_BYTES / 2**30:.0f} GiB per "
                         f"sample: check --input-shape")


def ort_basic_optimize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run onnxruntime's basic-level graph optimizer offline and return the optimized model."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 4  # failures become one line of ours
    with tempfile.TemporaryDirectory(prefix="hwopt-canon-") as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        options.optimized_model_filepath = out
        big = held_weights.has_held(model)
        if big:
            held_weights.optimized_output(options, tmp)
        try:
            held_weights.inference_session(model, options, as_inputs=True)
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise HwoptError(f"onnxruntime cannot load the model: {str(exc).strip().splitlines()[0][:300]}") from None
        optimized = held_weights.load_optimized(out) if big else onnx.load(out)
        if big:  # the held weights were inputs onnxruntime left alone: the same buffers, not copies
            held_weights.restore_held(optimized, model)
    return optimized


def ort_basic_optimize_settled(model: onnx.ModelProto, passes: int = 3) -> onnx.ModelProto:
    """``ort_basic_optimize`` again while a pass still changes the op histogram (at most ``passes``).

    onnxruntime inlines function ops (CastLike, ...) after it has folded constants, so what they
    compute from constants is only folded by the next pass, and BatchNorm only fused into a Conv
    whose bias has become constant then: torch's dynamo exporter with ``optimize=False`` writes every
    Conv bias as ``Expand(CastLike(0, x), Shape(W))``, which one pass leaves with all its BatchNorms.
    """
    before = Counter(n.op_type for n in model.graph.node)
    for _ in range(passes):
        model = ort_basic_optimize(model)
        after = Counter(n.op_type for n in model.graph.node)
        if after == before:
            break
        before = after
    return model


_AFFINE_OPS = ("Mul", "Add", "Sub", "Div")
_CONV_OPS = ("Conv", "ConvTranspose")


def fold_conv_affine(model: onnx.ModelProto) -> int:
    """Fold ``Conv/ConvTranspose -> Mul/Add/Sub/Div by a per-channel or scalar constant`` and
    ``ConvTranspose -> BatchNormalization`` into the conv.

    onnxruntime's Conv+Mul / Conv+Add fusions only fire when the constant is the
    second operand and has the conv's exact per-channel shape; paddle2onnx writes
    ``Mul(scale, conv)`` / ``Add(conv, bias)`` with 1-element constants (PP-LCNetV3's
    learnable affine blocks, after every conv), which leaves every conv followed by
    two nodes that hide IBN blocks and activations. It also writes a ConvTranspose's
    bias as a separate ``Add`` and leaves a BatchNorm after it (PP-OCRv4's detector
    head), which onnxruntime does not fuse: on an Ethos-U55 each of those three
    per-channel broadcasts over a 160x160 map cost Vela 6.6 M cycles of constant reads
    from flash, 56% of the model's time. Exact up to float rounding. Returns the number
    of nodes folded.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {v.name for v in graph.output}
    folded = 0
    changed = True
    while changed:
        changed = False
        uses: Counter = Counter(name for node in graph.node for name in node.input)
        producers = {name: node for node in graph.node for name in node.output}
        for node in list(graph.node):
            if node.op_type == "BatchNormalization":
                x = node.input[0]
                conv = producers.get(x)
                if (conv is not None and conv.op_type == "ConvTranspose" and uses[x] == 1 and x not in outputs
                        and len(node.output) == 1 and all(name in inits for name in node.input[1:5])
                        and _fold_one(graph, inits, conv, node, None)):
                    graph.node.remove(node)
                    folded += 1
                    changed = True
                    break
                continue
            if node.op_type not in _AFFINE_OPS or len(node.input) != 2:
                continue
            for x_index in (0, 1):
                if x_index == 1 and node.op_type in ("Sub", "Div"):
                    break  # c - x and c / x are not affine in x
                x, c = node.input[x_index], node.input[1 - x_index]
                conv = producers.get(x)
                if conv is None or conv.op_type not in _CONV_OPS or c not in inits or uses[x] != 1 or x in outputs:
                    continue
                if _fold_one(graph, inits, conv, node, c):
                    graph.node.remove(node)
                    folded += 1
                    changed = True
                break
            if changed:
                break
    if folded:
        used = {name for node in graph.node for name in node.input}
        used |= {v.name for v in graph.output} | {v.name for v in graph.input}
        keep = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return folded


def batch_norm_affine(gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
                      epsilon: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per channel of an inference-mode BatchNormalization: ``x * scale + shift``."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + epsilon)
    return scale, np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale


def _fold_one(graph, inits, conv, node, const_name) -> bool:
    """Fold ``node`` (Mul/Add/Sub/Div by the constant ``const_name``, or a BatchNormalization when it is None)
    into ``conv`` (Conv: weights [Cout, Cin/g, k..]; ConvTranspose: [Cin, Cout/g, k..])."""
    from onnx import numpy_helper

    if len(conv.input) < 2 or conv.input[1] not in inits:
        return False
    weight = held_weights.tensor_array(inits[conv.input[1]])
    if weight.dtype not in (np.float32, np.float64, np.float16) or weight.ndim < 3:
        return False
    transposed = conv.op_type == "ConvTranspose"
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    out_channels = weight.shape[1] * group if transposed else weight.shape[0]
    rank = weight.ndim
    if const_name is None:  # BatchNormalization: x * scale + shift
        bn_scale, bn_shift = batch_norm_affine(
            *(held_weights.tensor_array(inits[name]) for name in node.input[1:5]),
            epsilon=next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5))
        if bn_scale.shape != (out_channels,):
            return False
    else:
        value = held_weights.tensor_array(inits[const_name]).astype(np.float64)
        # Broadcast against (N, C, spatial...): only shapes that vary at most along C qualify.
        if value.ndim > rank or (value.ndim == rank and value.shape[0] != 1):
            return False
        full = value.reshape((1,) * (rank - value.ndim) + value.shape)
        if any(d != 1 for i, d in enumerate(full.shape) if i != 1) or full.shape[1] not in (1, out_channels):
            return False
        per_channel = np.broadcast_to(full.reshape(-1), (out_channels,))
    bias = (
        held_weights.tensor_array(inits[conv.input[2]]).astype(np.float64)
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] in inits
        else None
    )
    if len(conv.input) > 2 and conv.input[2] and bias is None:
        return False  # a non-constant bias
    if bias is None:
        bias = np.zeros(out_channels)
    w = weight.astype(np.float64)

    def scaled(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
        if not transposed:
            return w * scale.reshape((-1,) + (1,) * (rank - 1))
        # [Cin, Cout/g, k..]: output channel g * Cout/g + j is column j of group g's rows
        per_group = w.reshape((group, w.shape[0] // group) + w.shape[1:])
        factor = scale.reshape((group, 1, w.shape[1]) + (1,) * (rank - 2))
        return (per_group * factor).reshape(w.shape)

    if const_name is None:
        w = scaled(w, bn_scale)
        bias = bias * bn_scale + bn_shift
    elif node.op_type in ("Mul", "Div"):
        scale = per_channel if node.op_type == "Mul" else 1.0 / per_channel
        w = scaled(w, scale)
        bias = bias * scale
    else:
        bias = bias + (per_channel if node.op_type == "Add" else -per_channel)
    # New initializers: the originals may be shared with other nodes.
    names = {t.name for t in graph.initializer}
    for index, array in ((1, w.astype(weight.dtype)), (2, bias.astype(weight.dtype))):
        base = f"{conv.output[0]}_folded_{'W' if index == 1 else 'B'}"
        name, k = base, 0
        while name in names:
            k += 1
            name = f"{base}{k}"
        names.add(name)
        tensor = numpy_helper.from_array(array, name)
        graph.initializer.append(tensor)
        inits[name] = tensor
        if index < len(conv.input):
            conv.input[index] = name
        else:
            conv.input.append(name)
    conv.output[0] = node.output[0]
    return True


def drop_unused_opsets(model: onnx.ModelProto) -> None:
    used = {node.domain or "" for node in model.graph.node}
    keep = [o for o in model.opset_import if (o.domain or "") in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed (or duplicate-named) node a unique, typeable name like ``conv_12``."""
    seen: set[str] = set()
    counters: Counter = Counter()
    for node in model.graph.node:
        name = node.name
        if not name or name in seen:
            while True:
                candidate = f"{node.op_type.lower()}_{counters[node.op_type]}"
                counters[node.op_type] += 1
                if candidate not in seen:
                    break
            node.name = candidate
        seen.add(node.name)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Strict onnx shape inference with data propagation (fills value_info)."""
    del model.graph.value_info[:]
    held_weights.shrink(model)  # a rewrite may have grown it past what protobuf serialises
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # InferenceError and friends
        raise HwoptError(f"shape inference failed: {str(exc).strip().splitlines()[0][:300]}") from None
    # Inference overwrites symbolic output dims with the values it computed (after
    # --input-shape fixes a dynamic input), which would change the model's declared
    # signature: keep the graph input/output declarations exactly as they were.
    declared = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    for value in list(inferred.graph.input) + list(inferred.graph.output):
        if value.name in declared and value.SerializeToString() != declared[value.name].SerializeToString():
            inferred.graph.value_info.append(value)  # the inferred shape stays known to analyses
            value.CopyFrom(declared[value.name])
    return inferred


def canonicalize(
    model: onnx.ModelProto,
    input_shapes: list[InputShape] = (),
    *,
    verify: bool = True,
    seed: int = 0,
) -> tuple[onnx.ModelProto, CanonicalizationReport]:
    """Return the canonical, shape-inferred copy of ``model`` and what changed (verified exact)."""
    start = time.perf_counter()
    original = onnx.ModelProto()
    original.CopyFrom(model)
    apply_input_shapes(original, list(input_shapes))
    check_input_dims(original)

    canonical = ort_basic_optimize_settled(original)
    folded = fold_conv_affine(canonical)
    clamps = minmax_to_clip(canonical)
    if clamps:  # a ReLU before a new Clip(0, hi) only fuses into it now (onnxruntime's ReluClipFusion); else
        # Keras' relu(max_value=6) (Relu, Min, Max) stays a ReLU and a clamp, and a second canonicalisation
        # gives another graph (faceres of set E: 27 standalone ReLU6 passes by Vela, 2.6 M cycles)
        canonical = ort_basic_optimize_settled(canonical)
    gates = hard_sigmoids(canonical)  # after the clamps: it matches their Clips
    drop_unused_opsets(canonical)
    name_nodes(canonical)
    _restore_io(canonical, original)
    canonical.ir_version = original.ir_version
    canonical = infer_shapes(canonical)
    flattened = reshape_to_flatten(canonical)  # needs the inferred shapes; keeps them valid
    round_trips = drop_view_round_trips(canonical)  # also needs the shapes; keeps the rest valid

    report = CanonicalizationReport(
        nodes_before=len(original.graph.node),
        nodes_after=len(canonical.graph.node),
        ops_before=Counter(n.op_type for n in original.graph.node),
        ops_after=Counter(n.op_type for n in canonical.graph.node),
        seconds=0.0,
    )
    if folded:
        report.notes.append(f"folded {folded} constant Mul/Add/Sub/Div (or BatchNorm after a ConvTranspose) into "
                            "the preceding Conv/ConvTranspose")
    if clamps:
        report.notes.append(f"rewrote {clamps} Max(Min(x, hi), lo) clamps as Clip")
    if gates:
        report.notes.append(f"rewrote {gates} relu6(x + 3) / 6 as HardSigmoid")
    if flattened:
        report.notes.append(f"rewrote {flattened} flattening Reshape(s) with a constant shape as Flatten")
    if round_trips:
        report.notes.append(f"dropped {round_trips} view op(s) (Reshape/Squeeze/...) whose chain ends in the shape "
                            "it starts from, or Pad/Slice op(s) that copy their input unchanged")
    if verify:
        from hwopt.calibration.samples import random_inputs
        from hwopt.fidelity.verify import compare_models

        comparison = compare_models(original, canonical, random_inputs(original, 2, seed), check_reference=True)
        report.max_rel_error = comparison.worst_rel_max_abs
        if not comparison.exact:
            raise VerificationError(
                f"canonicalisation changed the outputs (relative max-abs error {comparison.worst_rel_max_abs:.2e}); "
                "please report this model"
            )
    report.seconds = time.perf_counter() - start
    return canonical, report


def _restore_io(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Keep the original graph input/output declarations (names, dtypes, symbolic dims)."""
    by_name = {v.name: v for v in list(original.graph.input) + list(original.graph.output)}
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name in by_name:
            value.CopyFrom(by_name[value.name])
    initializers = {t.name for t in model.graph.initializer}
    # onnxruntime lists folded initializers as inputs for old IR versions; graph inputs stay as declared.
    real = [v for v in model.graph.input if v.name not in initializers or v.name in by_name]
    del model.graph.input[:]
    model.graph.input.extend(real)


def load_canonical(
    path, input_shapes: list[InputShape] = (), seed: int = 0, for_writing: bool = False
) -> tuple[onnx.ModelProto, onnx.ModelProto, CanonicalizationReport]:
    """Load a user's file; return (original with given shapes, canonical model, report).

    ``for_writing``: the model will be rewritten and written, so it must hold no NaN or Inf weight
    (no written model does): refused here, before any work, rather than after it.
    """
    from hwopt.io.model import check_finite, load_model

    original = load_model(path)
    if for_writing:
        check_finite(original, f"{path}: refusing to rewrite it (hwopt writes no model with NaN or Inf weights)")
    apply_input_shapes(original, list(input_shapes))
    canonical, report = canonicalize(original, seed=seed)
    return original, canonical, report
