"""What to tell a user whose model leaves an input dimension open (``--input-shape``).

A suggestion only comes from the model itself: its metadata (exporters that record an input size), or
another input of the same rank whose size is fixed. Otherwise the size is the user's to give (a text
classifier trained at 48x192 is not a 224x224 image net), and the message says which dimensions are
open the way a user counts them: by their names when the exporter named them, else from 1.
"""

from __future__ import annotations

import re

import onnx

# Names that exporters make up (torch.export's s0, onnx's unk__3, Paddle's ?): they say nothing to a user.
_ANONYMOUS = re.compile(r"^(\?|-1|s\d+|unk__\d+|dim_?\d*|d\d+|)$", re.IGNORECASE)
_METADATA_KEYS = ("shape", "size", "resolution", "input")


def _fixed(dim: onnx.TensorShapeProto.Dimension) -> int | None:
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def _name(dim: onnx.TensorShapeProto.Dimension) -> str | None:
    return dim.dim_param if dim.HasField("dim_param") and not _ANONYMOUS.match(dim.dim_param) else None


def shape_text(dims) -> str:
    """``?x3x48x192``: fixed sizes, names, and ``?`` for the rest."""
    return "x".join(str(_fixed(d)) if _fixed(d) else (_name(d) or "?") for d in dims)


def _image_axes(dims) -> dict[int, str]:
    """Axis -> height/width for a 4-d image input (NCHW with 1, 3 or 4 channels, or NHWC)."""
    if len(dims) != 4:
        return {}
    if _fixed(dims[1]) in (1, 3, 4):
        return {2: "height", 3: "width"}
    if _fixed(dims[3]) in (1, 3, 4):
        return {1: "height", 2: "width"}
    return {}


def _consistent(dims, sizes: list[int]) -> list[int] | None:
    """``sizes`` as a full shape for ``dims`` (a batch of 1 where they leave it out), when they agree with every
    fixed dim; None otherwise."""
    if len(sizes) == len(dims) - 1:
        sizes = [1] + sizes
    if len(sizes) != len(dims):
        return None
    if any(_fixed(d) and _fixed(d) != s for d, s in zip(dims[1:], sizes[1:])):
        return None
    return [1] + sizes[1:]


def _from_model(model: onnx.ModelProto | None, value: onnx.ValueInfoProto) -> tuple[list[int], str] | None:
    """(a full shape, where it comes from) when the model says one."""
    if model is None:
        return None
    dims = value.type.tensor_type.shape.dim
    for prop in model.metadata_props:
        if any(k in prop.key.lower() for k in _METADATA_KEYS):
            sizes = [int(s) for s in re.findall(r"\d+", prop.value)]
            open_axes = [i for i, d in enumerate(dims) if i > 0 and not _fixed(d)]
            if len(sizes) == len(open_axes) and sizes:  # just the open ones, in order
                full = [1] + [_fixed(d) or 0 for d in dims[1:]]
                for axis, size in zip(open_axes, sizes):
                    full[axis] = size
                return full, f"the model's metadata says {prop.key} = {prop.value}"
            shape = _consistent(dims, sizes)
            if shape:
                return shape, f"the model's metadata says {prop.key} = {prop.value}"
    initializers = {t.name for t in model.graph.initializer}
    for other in model.graph.input:
        if other.name == value.name or other.name in initializers:
            continue
        odims = other.type.tensor_type.shape.dim
        sizes = [_fixed(d) for d in odims]
        if len(odims) == len(dims) and all(sizes[1:]):
            shape = _consistent(dims, [1] + sizes[1:])
            if shape:
                return shape, f"input {other.name!r} is {shape_text(odims)}"
    return None


def unknown_dims_message(value: onnx.ValueInfoProto, model: onnx.ModelProto | None = None) -> str | None:
    """One line for an input whose dims after the batch are not all fixed (None when they are)."""
    dims = value.type.tensor_type.shape.dim
    open_axes = [i for i, d in enumerate(dims) if i > 0 and not _fixed(d)]
    if not open_axes:
        return None
    image = _image_axes(dims)
    names = [f"{_name(dims[i])!r}" if _name(dims[i]) else image.get(i, f"dim {i + 1}") for i in open_axes]
    positions = _and([str(i + 1) for i in open_axes])
    what = _and(names)
    head = (f"input {value.name!r} ({shape_text(dims)}) leaves its {what} open "
            f"(dim{'s' if len(open_axes) > 1 else ''} {positions} of {len(dims)}, counted from 1)")
    found = _from_model(model, value)
    if found is not None:
        shape, source = found
        return f"{head}; {source}: give --input-shape {value.name}={'x'.join(map(str, shape))}"
    placeholders = [str(_fixed(d)) if _fixed(d) else "1" for d in dims]
    for i in open_axes:
        placeholders[i] = _name(dims[i]) or {"height": "H", "width": "W"}.get(image.get(i, ""), f"D{i + 1}")
    blanks = _and([placeholders[i] for i in open_axes])
    return (f"{head}, and the model does not say its size: give the one it was trained at, "
            f"--input-shape {value.name}={'x'.join(placeholders)} with {blanks} filled in")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
