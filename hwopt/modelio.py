"""Reading and writing ONNX files safely.

Every way a user's file can be wrong (not ONNX, truncated, missing external
data, unsupported opset, unknown dims) becomes one HwoptError line. Writing
never touches the input file and always goes through a temporary file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from hwopt.errors import HwoptError

MIN_OPSET = 11
MAX_OPSET = onnx.defs.onnx_opset_version()
# Protobuf refuses to serialise a single message over 2 GiB.
_PROTOBUF_LIMIT = 2**31 - 1


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
    _load_external_data(model, path)
    _clear_negative_dims(model)
    version = opset_version(model)
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise HwoptError(
            f"{path}: unsupported opset {version}: hwopt supports opsets {MIN_OPSET} to {MAX_OPSET}"
            + (" (re-export with a newer opset)" if version < MIN_OPSET else "")
        )
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise HwoptError(f"{path}: invalid ONNX model: {_first_line(exc)}") from None
    return model


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


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    tensors = [t for t in _all_tensors(model) if uses_external_data(t)]
    if not tensors:
        return
    for tensor in tensors:
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if location is None or not (path.parent / location).is_file():
            raise HwoptError(
                f"{path}: missing external data file {location!r} for tensor {tensor.name!r} "
                f"(expected next to the model in {path.parent})"
            )
    try:
        load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as exc:
        raise HwoptError(f"{path}: cannot read external data: {_first_line(exc)}") from None


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


def save_model(model: onnx.ModelProto, out_path: str | os.PathLike, *, protect: list[Path] = ()) -> Path:
    """Write a model atomically; refuses to overwrite any of the ``protect`` paths (the inputs)."""
    out_path = Path(out_path)
    for path in protect:
        if out_path.resolve() == Path(path).resolve():
            raise HwoptError(f"refusing to overwrite the input model {path}: choose another -o path")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        if model.ByteSize() > _PROTOBUF_LIMIT:
            onnx.save_model(model, tmp, save_as_external_data=True, location=out_path.name + ".data")
        else:
            onnx.save_model(model, tmp)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
