"""Weights held outside the ModelProto, so models over protobuf's 2 GiB limit load, rewrite and save.

Protobuf cannot serialise a message over 2 GiB, and everything that hands a model to onnxruntime, the
checker or shape inference serialises it. So the large initializers of a big model are *held*: the
tensor in the proto keeps its name, type and dims but no data (``data_location`` EXTERNAL, location
``hwopt-held/<key>``), and its bytes live in this module's registry: a read-only memory map of the
input's external-data file where they came from one (no copy in memory), else an array.

- ``load_held``: a big external-data model's tensors held as memory maps (``hwopt.io.model``).
- ``shrink``: hold the large inline tensors of a model that grew too big (a rewrite padded its weights).
- ``tensor_array``: a tensor's values, held or not (what ``numpy_helper.to_array`` is for the rest).
- ``session_bytes``: the bytes onnxruntime loads and the held arrays, given to it with
  ``SessionOptions.add_external_initializers`` (shared, not copied).
- ``checkable``: a copy on disk for the path-based checker (held data as a sparse file: no disk used).
- ``external_copy``: a model pointing into one external-data file, and its writer (``save_model``).

Held arrays created by ``shrink`` stay in the registry for the life of the process (a proto cannot own
them); a long search over a big model keeps each rewritten large weight it made.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

PROTOBUF_LIMIT = 2**31 - 1
# Hold tensors from this size: small ones (shapes, scales) stay inline where passes read them.
HOLD_BYTES = 1 << 20
# Shrink well before the limit: the proto's other fields and a rewrite's new tensors need room.
SHRINK_AT = PROTOBUF_LIMIT - (256 << 20)
_PREFIX = "hwopt-held/"
_HELD: dict[str, np.ndarray] = {}  # key -> the tensor's bytes (uint8, as raw_data would hold them)
_KEYS = itertools.count()
# Types whose raw bytes are a plain numpy array (no packing, no conversion on the way to onnxruntime).
_PLAIN = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.INT16,
          TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32,
          TensorProto.UINT64, TensorProto.BOOL}


def _location(tensor: TensorProto) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def is_held(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL and _location(tensor).startswith(_PREFIX)


def _hold(tensor: TensorProto, raw: np.ndarray) -> None:
    key = str(next(_KEYS))
    _HELD[key] = raw
    _point(tensor, _PREFIX + key)


def _point(tensor: TensorProto, location: str, offset: int | None = None, length: int | None = None) -> None:
    """Make ``tensor`` refer to external data at ``location`` (its inline values cleared)."""
    for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        tensor.ClearField(name)
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)


def hold_array(name: str, values: np.ndarray) -> TensorProto:
    """A held tensor of ``values`` (shared, not copied, when contiguous)."""
    values = np.ascontiguousarray(values)
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(values.dtype)
    tensor.dims.extend(values.shape)
    _hold(tensor, values.reshape(-1).view(np.uint8))
    return tensor


def _raw(tensor: TensorProto) -> np.ndarray:
    return _HELD[_location(tensor)[len(_PREFIX):]]


def tensor_array(tensor: TensorProto) -> np.ndarray:
    """The tensor's values (read-only for a held one)."""
    if not is_held(tensor):
        return numpy_helper.to_array(tensor)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    return _raw(tensor).view(dtype).reshape(tuple(tensor.dims))


def has_held(model: onnx.ModelProto) -> bool:
    return any(is_held(t) for t in model.graph.initializer)


def load_held(model: onnx.ModelProto, folder: Path) -> int:
    """Hold every external-data initializer of a plain type as a read-only memory map; the bytes held."""
    total = 0
    for tensor in model.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL or tensor.data_type not in _PLAIN or is_held(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        offset = int(info.get("offset", 0) or 0)
        path = folder / info["location"]
        size = path.stat().st_size
        length = int(info.get("length", 0) or 0) or size - offset
        expected = int(np.prod(tensor.dims, dtype=np.int64)) * np.dtype(
            onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        if length != expected or offset + length > size:
            raise ValueError(f"tensor {tensor.name!r}: {length} bytes at offset {offset} of {info['location']} "
                             f"({size} bytes) for {expected} bytes of values")
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(length,)) if length else \
            np.zeros(0, np.uint8)
        _hold(tensor, raw)
        total += length
    return total


def shrink(model: onnx.ModelProto, force: bool = False) -> None:
    """Hold the large inline initializers when the proto nears the 2 GiB limit (or always, ``force``)."""
    if not force and approx_bytes(model) < SHRINK_AT:
        return
    for tensor in model.graph.initializer:
        if (tensor.data_location == TensorProto.EXTERNAL or tensor.data_type not in _PLAIN
                or _inline_bytes(tensor) < HOLD_BYTES):
            continue
        if tensor.HasField("raw_data"):
            raw = np.frombuffer(tensor.raw_data, dtype=np.uint8)  # the one copy, then the proto's is dropped
        else:
            raw = np.frombuffer(np.ascontiguousarray(numpy_helper.to_array(tensor)).tobytes(), dtype=np.uint8)
        _hold(tensor, raw)


def approx_bytes(model: onnx.ModelProto) -> int:
    """About the model's serialised size, without serialising (``ByteSize`` fails past 2 GiB)."""
    inline = sum(_inline_bytes(t) for t in model.graph.initializer if t.data_location != TensorProto.EXTERNAL)
    return inline + 64 * len(model.graph.node) + (1 << 20)


def _inline_bytes(tensor: TensorProto) -> int:
    try:
        size = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        size = 1
    return int(np.prod(tensor.dims, dtype=np.int64)) * size


def session_bytes(model: onnx.ModelProto, options, as_inputs: bool = False) -> bytes:
    """The model's bytes for ``onnxruntime.InferenceSession(bytes, options)``; held weights go in ``options``.

    By default they are ``add_external_initializers`` (onnxruntime copies them once per session: one copy
    of the weights while a session lives). ``as_inputs``: for a session that only optimizes (never runs),
    held initializers become graph inputs that ``add_initializer`` supplies without a copy, so the
    optimized model keeps them as inputs (``restore_held``) instead of writing gigabytes out; the folds
    that would rewrite a held weight (BatchNorm into its conv) are then left undone, exact either way.
    """
    import onnxruntime as ort

    shrink(model)
    held = [t for t in model.graph.initializer if is_held(t)]
    if not held:
        return model.SerializeToString()
    values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(tensor_array(t))) for t in held]
    if not as_inputs:
        options.add_external_initializers([t.name for t in held], values)
        # The extended levels re-lay out every conv weight (NCHWc): more copies and time for a big model.
        if int(options.graph_optimization_level) > int(ort.GraphOptimizationLevel.ORT_ENABLE_BASIC):
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        return model.SerializeToString()
    options.add_session_config_entry("session.disable_prepacking", "1")  # a prepacked copy is of no use here
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    names = {t.name for t in held}
    kept = [t for t in copy.graph.initializer if t.name not in names]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    declared = {v.name for v in copy.graph.input}
    for tensor, value in zip(held, values):
        if tensor.name not in declared:
            copy.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                                       list(tensor.dims)))
        options.add_initializer(tensor.name, value)
    return copy.SerializeToString()


def inference_session(model: onnx.ModelProto, options=None, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                      as_inputs: bool = False):
    """``onnxruntime.InferenceSession`` of ``model``, its held weights supplied by ``session_bytes``."""
    import onnxruntime as ort

    options = options or ort.SessionOptions()
    return ort.InferenceSession(session_bytes(model, options, as_inputs), options, providers=list(providers))


def restore_held(optimized: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Turn the held weights ``session_bytes`` made graph inputs back into (held) initializers."""
    held = {t.name: t for t in source.graph.initializer if is_held(t)}
    inputs = [v for v in optimized.graph.input if v.name not in held]
    back = [v.name for v in optimized.graph.input if v.name in held]
    del optimized.graph.input[:]
    optimized.graph.input.extend(inputs)
    optimized.graph.initializer.extend(held[name] for name in back)


def optimized_output(options, folder: str) -> None:
    """Make onnxruntime write an optimized big model's large initializers to one file in ``folder``."""
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                     str(HOLD_BYTES))


def load_optimized(path: str) -> onnx.ModelProto:
    """An optimized model onnxruntime wrote (``optimized_output``), its external initializers held."""
    model = onnx.load(path, load_external_data=False)
    load_held(model, Path(path).parent)
    load_rest(model, Path(path).parent)  # the odd types: inline
    return model


def load_rest(model: onnx.ModelProto, folder: Path) -> None:
    """Read the external data of every tensor not held into the proto (onnx's loader, minus held ones)."""
    from onnx.external_data_helper import _get_all_tensors, load_external_data_for_tensor, uses_external_data

    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor) and not is_held(tensor):
            load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = TensorProto.DEFAULT
            del tensor.external_data[:]


@contextmanager
def checkable(model: onnx.ModelProto) -> Iterator[str]:
    """A path of ``model`` for ``onnx.checker.check_model(path)``: held data as one sparse file (no disk)."""
    with tempfile.TemporaryDirectory(prefix="hwopt-check-") as folder:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        offset = 0
        for tensor in copy.graph.initializer:
            if is_held(tensor):
                length = _raw(tensor).nbytes
                _point(tensor, "held.bin", offset, length)
                offset += length
        with open(os.path.join(folder, "held.bin"), "wb") as handle:
            handle.truncate(offset)
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as handle:
            handle.write(copy.SerializeToString())
        yield path


def external_copy(model: onnx.ModelProto, data_name: str):
    """(a copy of ``model`` whose initializers of 1 KiB or more point into ``data_name``, the writer of that
    file): for ``save_model``. Holds ``model``'s large inline tensors first (same values): no weight copied."""
    shrink(model, force=True)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    parts: list[tuple[int, memoryview]] = []
    offset = 0
    for tensor in copy.graph.initializer:
        if not is_held(tensor) and (tensor.data_location == TensorProto.EXTERNAL
                                    or tensor.data_type not in _PLAIN or _inline_bytes(tensor) < 1024):
            continue
        raw = memoryview(np.ascontiguousarray(_raw(tensor) if is_held(tensor) else
                                              numpy_helper.to_array(tensor))).cast("B")
        offset += -offset % 4096  # page-aligned: onnxruntime can map the data instead of copying it
        parts.append((offset, raw))
        _point(tensor, data_name, offset, raw.nbytes)
        offset += raw.nbytes
    end = offset

    def write(handle) -> None:
        for start, raw in parts:
            handle.seek(start)
            handle.write(raw)
        handle.truncate(end)

    return copy, write


def all_finite(tensor: TensorProto) -> bool:
    """True when a held float tensor holds no NaN or Inf (checked in slices: no copy of the whole)."""
    values = tensor_array(tensor).reshape(-1)
    step = 1 << 24
    return all(np.isfinite(values[i:i + step]).all() for i in range(0, values.size, step))
