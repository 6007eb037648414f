"""A model's real inputs (graph inputs that are not initializers) and the shape of one sample of each."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hwopt.errors import HwoptError
from hwopt.io.shape_hint import unknown_dims_message


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def sample_shape(value: onnx.ValueInfoProto) -> tuple[tuple[int, ...], int | None]:
    """(per-sample shape, fixed batch size or None when the batch dim is symbolic)."""
    dims = value.type.tensor_type.shape.dim
    if not dims:
        raise HwoptError(f"input {value.name!r} has no shape")
    problem = unknown_dims_message(value)
    if problem:
        raise HwoptError(problem)
    rest = [dim.dim_value for dim in dims[1:]]
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
    return tuple(rest), batch


def numpy_dtype(value: onnx.ValueInfoProto) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
