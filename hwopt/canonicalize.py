"""Canonicalisation: the exact clean-up every model gets before rules see it.

onnxruntime's *basic* graph optimizer already folds constants (Constant nodes
and constant subgraphs become initializers), fuses BatchNormalization and
Add/Mul into the preceding Conv and drops Identity nodes, using standard ONNX
ops only, so we build on it. What it lacks we do here: drop the opset domains
it declares but nothing uses, name every node so sites get stable ids, and
infer shapes. The result is verified against the input with onnxruntime.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import onnx
import onnxruntime as ort

from hwopt.errors import HwoptError, VerificationError
from hwopt.modelio import InputShape, apply_input_shapes


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
    """Every input dim but the batch (first) dim must be known to analyse the model."""
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if axis > 0 and not dim.HasField("dim_value"):
                shown = "x".join(str(d.dim_value) if d.HasField("dim_value") else "?" for d in dims)
                raise HwoptError(
                    f"input {value.name!r} has an unknown dimension {axis} (shape {shown}): "
                    f"give it with --input-shape {value.name}=" + _example_shape(dims)
                )


def _example_shape(dims) -> str:
    example = [d.dim_value if d.HasField("dim_value") else (1 if i == 0 else 224) for i, d in enumerate(dims)]
    return "x".join(str(v) for v in example)


def ort_basic_optimize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run onnxruntime's basic-level graph optimizer offline and return the optimized model."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="hwopt-canon-") as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        options.optimized_model_filepath = out
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise HwoptError(f"onnxruntime cannot load the model: {str(exc).strip().splitlines()[0][:300]}") from None
        optimized = onnx.load(out)
    return optimized


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
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # InferenceError and friends
        raise HwoptError(f"shape inference failed: {str(exc).strip().splitlines()[0][:300]}") from None


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

    canonical = ort_basic_optimize(original)
    drop_unused_opsets(canonical)
    name_nodes(canonical)
    _restore_io(canonical, original)
    canonical.ir_version = original.ir_version
    canonical = infer_shapes(canonical)

    report = CanonicalizationReport(
        nodes_before=len(original.graph.node),
        nodes_after=len(canonical.graph.node),
        ops_before=Counter(n.op_type for n in original.graph.node),
        ops_after=Counter(n.op_type for n in canonical.graph.node),
        seconds=0.0,
    )
    if verify:
        from hwopt.calibration import random_inputs
        from hwopt.verify import compare_models

        comparison = compare_models(original, canonical, random_inputs(original, 2, seed))
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
    path, input_shapes: list[InputShape] = (), seed: int = 0
) -> tuple[onnx.ModelProto, onnx.ModelProto, CanonicalizationReport]:
    """Load a user's file; return (original with given shapes, canonical model, report)."""
    from hwopt.modelio import load_model

    original = load_model(path)
    apply_input_shapes(original, list(input_shapes))
    canonical, report = canonicalize(original, seed=seed)
    return original, canonical, report
