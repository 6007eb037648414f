"""Reading and writing ONNX files safely.

Every way a user's file can be wrong (not ONNX, truncated, missing external
data, unsupported opset, unknown dims) becomes one HwoptError line. Writing
(``save_model``, the one way a model is written) never touches the input's
files, goes through a temporary file (``hwopt.io.atomic``) and refuses a model
holding a non-finite number.

Models over protobuf's 2 GiB limit: ``load_model`` checks a model with external
data by path, keeps its large weights memory-mapped outside the proto
(``hwopt.io.held_weights``), and ``save_model`` writes the outputs of such inputs
(and any model over 2 GiB) with their weights in ``OUT.onnx.data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from hwopt.errors import HwoptError
from hwopt.io.atomic import atomic_save, atomic_write
from hwopt.io.outputs import check_not_input

MIN_OPSET = 11
MAX_OPSET = onnx.defs.onnx_opset_version()
# Inputs whose weights were external data: their outputs keep them external.
_EXTERNAL_INPUTS: set[Path] = set()
# One sample of the inputs may take this much; hwopt runs dozens of samples (calibration, verification).
MAX_SAMPLE_BYTES = 2**30
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class InputShape:
    """A user-given shape for one graph input (``--input-shape NAME=1x3x224x224``)."""

    name: str
    dims: tuple[int, ...]

    @staticmethod
    def parse(text: str) -> "InputShape":
        name, sep, dims = text.rpartition("=")
        if not sep or not name:
            raise HwoptError(f"bad --input-shape {text!r}: expected NAME=1x3x224x224")
        try:
            values = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise HwoptError(f"bad --input-shape {text!r}: dims must be integers like 1x3x224x224") from None
        if not values or any(v <= 0 for v in values):
            raise HwoptError(f"bad --input-shape {text!r}: dims must be positive")
        return InputShape(name, values)


def parse_input_shapes(values: Sequence[str] | str | None) -> list[InputShape]:
    """``--input-shape`` values (``NAME=1x3x224x224``, one or several) parsed."""
    if isinstance(values, str):
        values = [values]
    return [InputShape.parse(str(v)) for v in values or []]


def opset_version(model: onnx.ModelProto) -> int:
    """The default-domain opset the model declares."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise HwoptError("the model declares no ONNX (default domain) opset")


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and sanity-check an ONNX file, with external data, or raise HwoptError."""
    path = Path(path)
    if not path.is_file():
        raise HwoptError(f"{path}: no such file")
    data = path.read_bytes()
    if not data:
        raise HwoptError(f"{path}: the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise HwoptError(f"{path}: not an ONNX model or the file is truncated ({_first_line(exc)})") from None
    # Arbitrary bytes sometimes parse as an (almost) empty message: require a real graph.
    if not model.graph.node or not model.opset_import or not model.graph.output:
        raise HwoptError(f"{path}: not an ONNX model (no graph, opset or outputs found)")
    bad = _non_utf8_string(model)
    if bad is not None:
        raise HwoptError(f"{path}: {bad[0]} {bad[1]!r} is not valid UTF-8 text (ONNX strings are UTF-8): "
                         f"fix the exporter's names")
    external = _load_external_data(model, path)
    _check_tensor_data(model, path)
    _clear_negative_dims(model)
    version = opset_version(model)
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise HwoptError(
            f"{path}: unsupported opset {version}: hwopt supports opsets {MIN_OPSET} to {MAX_OPSET}"
            + (" (re-export with a newer opset)" if version < MIN_OPSET else "")
        )
    try:
        # By path for external data: the checker then finds the data files, and has no 2 GiB limit.
        onnx.checker.check_model(str(path) if external else model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise HwoptError(f"{path}: invalid ONNX model: {_first_line(exc)}") from None
    return model


def was_external(path: str | os.PathLike) -> bool:
    """True when ``load_model`` read this file's weights from external data (outputs keep them external)."""
    return Path(path).resolve() in _EXTERNAL_INPUTS


def _check_tensor_data(model: onnx.ModelProto, path: Path) -> None:
    """Every initializer and constant holds as many values as its shape says (the checker does not look)."""
    from hwopt.io.held_weights import is_held

    for name, tensor in _named_tensors(model.graph):
        if is_held(tensor):
            continue  # its length was checked against its shape when it was mapped
        try:
            numpy_helper.to_array(tensor)
        except Exception as exc:  # noqa: BLE001 - ValueError on a size mismatch, others on odd types
            raise HwoptError(f"{path}: tensor {name!r} (shape {list(tensor.dims)}) does not hold the data its "
                             f"shape needs ({_first_line(exc)})") from None


def _repeated(field) -> bool:
    # protobuf >= 5 has is_repeated (and drops label in its upb build); older ones only label.
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


def _non_utf8_string(message) -> tuple[str, bytes] | None:
    """(field, value) of the first string field that protobuf could not decode as UTF-8.

    ONNX is proto2, so the parser keeps such a string as bytes; names are compared with str everywhere.
    """
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if _repeated(field) else [value]
            for item in values:
                if isinstance(item, bytes):
                    owner = message.DESCRIPTOR.name.removesuffix("Proto").lower()
                    return f"a {owner}'s {field.name}", item
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            values = value if _repeated(field) else [value]
            for item in values:
                found = _non_utf8_string(item)
                if found is not None:
                    return found
    return None


def _clear_negative_dims(model: onnx.ModelProto) -> None:
    """Make negative dim values (paddle2onnx writes -1 for a dynamic batch) unknown dims.

    ONNX has no meaning for a negative dim; left in place, -1 reads as a fixed dim
    everywhere (so ``--input-shape x=1x...`` was refused as conflicting with it).
    """
    graph = model.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_value") and dim.dim_value < 0:
                    dim.Clear()


def _load_external_data(model: onnx.ModelProto, path: Path) -> bool:
    """Bring in the model's external data (held outside the proto when large); True when it had any."""
    from onnx.external_data_helper import uses_external_data

    from hwopt.io.held_weights import SHRINK_AT, load_held, load_rest

    tensors = [t for t in _all_tensors(model) if uses_external_data(t)]
    if not tensors:
        return False
    total = 0
    for tensor in tensors:
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if location is not None and (os.path.isabs(location) or os.path.normpath(location).startswith("..")):
            raise HwoptError(f"{path}: external data file {location!r} of tensor {tensor.name!r} is outside the "
                             f"model's directory {path.parent}: refusing to read it")
        if location is None or not (path.parent / location).is_file():
            raise HwoptError(
                f"{path}: missing external data file {location!r} for tensor {tensor.name!r} "
                f"(expected next to the model in {path.parent})"
            )
        length = next((e.value for e in tensor.external_data if e.key == "length"), None)
        total += int(length) if length and length.isdigit() else (path.parent / location).stat().st_size
    _EXTERNAL_INPUTS.add(path.resolve())
    try:
        if path.stat().st_size + total >= SHRINK_AT:
            load_held(model, path.parent)  # memory-mapped, not copied into the proto
        load_rest(model, path.parent)  # the rest (all of a model that fits)
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise HwoptError(f"{path}: cannot read external data: {_first_line(exc)}") from None
    return True


def _all_tensors(model: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)


def apply_input_shapes(model: onnx.ModelProto, shapes: list[InputShape]) -> None:
    """Fix graph input dims in place from user-given shapes (checked against known dims)."""
    inputs = {i.name: i for i in model.graph.input}
    for shape in shapes:
        if shape.name not in inputs:
            raise HwoptError(
                f"--input-shape names {shape.name!r}, which is not a graph input (inputs: {', '.join(inputs)})"
            )
        dims = inputs[shape.name].type.tensor_type.shape.dim
        if len(dims) != len(shape.dims):
            raise HwoptError(
                f"--input-shape {shape.name}: the model's input has rank {len(dims)}, got {len(shape.dims)} dims"
            )
        for axis, (dim, value) in enumerate(zip(dims, shape.dims)):
            if dim.HasField("dim_value") and dim.dim_value != value:
                raise HwoptError(
                    f"--input-shape {shape.name}: dim {axis} is fixed to {dim.dim_value} in the model, got {value}"
                )
            dim.Clear()
            dim.dim_value = value


def _named_tensors(graph: onnx.GraphProto):
    """(name, tensor) of every initializer and constant attribute, subgraphs included."""
    for tensor in graph.initializer:
        yield tensor.name, tensor
    for node in graph.node:
        for attribute in node.attribute:
            name = attribute.t.name or (node.output[0] if node.output else node.name)
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield name, attribute.t
            elif attribute.type == onnx.AttributeProto.TENSORS:
                for tensor in attribute.tensors:
                    yield tensor.name or name, tensor
            elif attribute.type == onnx.AttributeProto.GRAPH:
                yield from _named_tensors(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _named_tensors(sub)


def non_finite_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of the float initializers and constants holding NaN or Inf."""
    from onnx.external_data_helper import uses_external_data

    from hwopt.io.held_weights import all_finite, is_held

    bad = []
    for name, tensor in _named_tensors(model.graph):
        if tensor.data_type in _FLOAT_TYPES and is_held(tensor):
            if not all_finite(tensor):
                bad.append(name)
        elif tensor.data_type in _FLOAT_TYPES and not uses_external_data(tensor):
            values = numpy_helper.to_array(tensor)
            if values.size and not np.isfinite(values.astype(np.float32, copy=False)).all():
                bad.append(name)
    return bad


def check_finite(model: onnx.ModelProto, what: str) -> None:
    """HwoptError naming the first tensor of ``model`` that holds NaN or Inf."""
    bad = non_finite_tensors(model)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise HwoptError(f"{what}: tensor {bad[0]!r} holds non-finite values (NaN or Inf){more}")


def save_model(model: onnx.ModelProto, out_path: str | os.PathLike, *, protect: list[Path] = ()) -> Path:
    """Write a model atomically, never with a non-finite number; refuses to overwrite any of the
    ``protect`` paths (the inputs) or the files they consist of (external data)."""
    out_path = Path(out_path)
    check_not_input(out_path, protect, "-o")
    check_finite(model, f"refusing to write {out_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    from hwopt.io.held_weights import PROTOBUF_LIMIT, approx_bytes, external_copy, has_held

    if has_held(model) or approx_bytes(model) > PROTOBUF_LIMIT or any(was_external(p) for p in protect):
        data = out_path.with_name(out_path.name + ".data")
        check_not_input(data, protect, "-o")
        pointing, write_data = external_copy(model, data.name)
        atomic_write(data, write_data)  # the data first: the model that points into it then
        atomic_write(out_path, lambda handle: handle.write(pointing.SerializeToString()))
    else:
        atomic_save(out_path, lambda tmp: onnx.save_model(model, tmp))
    return out_path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
