"""ONNX -> int8 TFLite, without TensorFlow: ``write_tflite(model, path, samples=None) -> WriteResult``.

The model is canonicalised first (``hwopt.canonical.canonicalize``: BatchNorm folded, constants folded, shapes
inferred), every op is checked against the converter registry before any work, activation ranges are
taken on the calibration samples (or seeded random inputs, and the result says so), then each node (or
fused group of nodes, ``fusion``) is converted and the flatbuffer written whole (temporary + rename).

Names: every TFLite tensor that stands for an ONNX tensor keeps the ONNX name; ``WriteResult.layers``
maps each TFLite operator's output tensor to the ONNX nodes it came from, which is how Vela's per-layer
report is read back in ONNX terms. I/O: a fully int8 model (what an Ethos-U deployment feeds); 4-D
inputs and outputs are NHWC. ``WriteResult.inputs``/``outputs`` say, per tensor, the ONNX shape, the
stored shape, the permutation from the first to the second and the int8 parameters;
``hwopt.tflite.litert`` quantizes, transposes and back, so a caller keeps the ONNX model's semantics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from hwopt.errors import HwoptError
from hwopt.io.atomic import atomic_write
from hwopt.io.model import InputShape
from hwopt.tflite import layout
from hwopt.tflite.context import Context
from hwopt.tflite.fusion import plan
from hwopt.tflite.graph import Tensor
from hwopt.tflite.ops import check_supported, convert
from hwopt.tflite.quantize import collect_ranges, share_scales
from hwopt.tflite.schema import serialize


@dataclass(frozen=True)
class Boundary:
    """One graph input or output: ONNX shape, TFLite (stored) shape, perm (ONNX -> stored), int8 params."""

    name: str
    onnx_shape: tuple[int, ...]
    tflite_shape: tuple[int, ...]
    perm: tuple[int, ...]
    scale: float
    zero_point: int


@dataclass
class WriteResult:
    path: Path
    inputs: list[Boundary]
    outputs: list[Boundary]
    calibration: str  # "samples" | "random": what the activation ranges were taken on
    calibration_count: int
    operators: Counter = field(default_factory=Counter)  # TFLite opcode -> count
    layers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # TFLite op output tensor -> ONNX nodes
    onnx_nodes: int = 0


def _boundary(ctx: Context, name: str) -> Boundary:
    tensor = ctx.graph.tensors[ctx.tensor_of[name]]
    shape = ctx.shape(name)
    return Boundary(name, tuple(shape), tensor.shape, layout.perm(len(shape)), tensor.quant.scale[0],
                    tensor.quant.zero_point[0])


def convert_model(model: onnx.ModelProto, samples: dict[str, np.ndarray] | None = None,
                  input_shapes: Sequence[InputShape] = (), calibration_count: int = 8,
                  seed: int = 0) -> tuple[Context, WriteResult]:
    """The converted graph (in memory) and its description, without writing."""
    from hwopt.canonical.canonicalize import canonicalize

    canonical, _ = canonicalize(model, list(input_shapes), verify=False)
    units = plan(canonical).units
    check_supported([u.node for u in units])  # before the calibration runs
    initializers = {t.name for t in canonical.graph.initializer}
    inputs = [v for v in canonical.graph.input if v.name not in initializers]
    for value in list(inputs) + list(canonical.graph.output):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise HwoptError(f"graph input/output {value.name!r} is not float32: the int8 TFLite writer "
                             "quantizes float models")
    if samples:
        missing = [v.name for v in inputs if v.name not in samples]
        if missing:
            raise HwoptError(f"calibration samples lack the graph input(s) {', '.join(missing)}")
    ranges = share_scales(canonical, collect_ranges(canonical, samples, calibration_count, seed))
    ctx = Context(canonical, ranges)
    for value in inputs:
        shape = ctx.shape(value.name)
        index = ctx.graph.add_tensor(Tensor(value.name, layout.physical_shape(shape), "int8",
                                            ctx.quant_of(value.name)))
        ctx.tensor_of[value.name] = index
        ctx.graph.inputs.append(index)
    for unit in units:
        convert(ctx, unit)
    ctx.unit = None
    for value in canonical.graph.output:
        if value.name not in ctx.tensor_of:
            raise HwoptError(f"graph output {value.name!r} was not produced by a converted node")
        ctx.graph.outputs.append(ctx.tensor_of[value.name])
    result = WriteResult(
        path=Path(), inputs=[_boundary(ctx, v.name) for v in inputs],
        outputs=[_boundary(ctx, v.name) for v in canonical.graph.output],
        calibration=ranges.source, calibration_count=ranges.count,
        operators=Counter(op.opcode for op in ctx.graph.operators),
        layers={ctx.graph.tensors[op.outputs[0]].name: op.onnx_nodes for op in ctx.graph.operators},
        onnx_nodes=len(canonical.graph.node),
    )
    return ctx, result


def write_tflite(model: onnx.ModelProto, path: str | Path, samples: dict[str, np.ndarray] | None = None,
                 input_shapes: Sequence[InputShape] = (), calibration_count: int = 8, seed: int = 0) -> WriteResult:
    """Write ``model`` as an int8 TFLite file at ``path``.

    ``samples``: calibration arrays per graph input, samples first (as ``--calibration`` files); without
    them ``calibration_count`` seeded standard-normal inputs are used and ``result.calibration`` is
    "random". A node the writer cannot convert raises ``HwoptError`` naming it, before calibration.
    """
    path = Path(path)
    ctx, result = convert_model(model, samples, input_shapes, calibration_count, seed)
    data = serialize(ctx.graph)
    atomic_write(path, lambda f: f.write(data))
    result.path = path
    return result
