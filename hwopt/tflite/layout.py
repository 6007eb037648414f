"""ONNX (NCHW) to TFLite (NHWC) layout: which physical axis holds which ONNX axis.

Rule: every 4-D tensor is stored NHWC (physical axis i holds ONNX axis ``NHWC[i]``); tensors of any
other rank are stored as ONNX has them. Converters work in ONNX axes and map through here, so an op
that only moves data (Transpose, Reshape, Concat's axis, Pad's pads) stays exact. The graph's inputs and
outputs follow the same rule: a 4-D input is fed NHWC, and ``WriteResult`` records the permutation
(``boundary_perm``) that takes an ONNX-layout array to the TFLite one, which ``hwopt.tflite.litert``
applies on the way in and undoes on the way out.
"""

from __future__ import annotations

import numpy as np

NHWC = (0, 2, 3, 1)


def perm(rank: int) -> tuple[int, ...]:
    """Physical axis i holds ONNX axis perm(rank)[i]."""
    return NHWC if rank == 4 else tuple(range(rank))


def physical_shape(shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    p = perm(len(shape))
    return tuple(int(shape[i]) for i in p)


def to_physical(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(perm(array.ndim)))


def from_physical(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(np.argsort(perm(array.ndim))))


def physical_axis(axis: int, rank: int) -> int:
    return perm(rank).index(axis % rank)


def same_memory_order(shape: tuple[int, ...] | list[int]) -> bool:
    """True when the physical layout of ``shape`` holds its elements in ONNX order (only size-1 axes
    move), so a reshape can skip the transposes around it."""
    order = [axis for axis in perm(len(shape)) if shape[axis] != 1]
    return order == sorted(order)


def view_reorder(order: list[int], stored_shape: tuple[int, ...] | list[int]) -> list[int] | None:
    """The transpose of a stored tensor (physical axes; ``stored_shape`` its physical shape) that puts its
    elements in the order of ONNX axes ``order``, as a view op after a Transpose reads them; None when no
    element moves (only size-1 axes change place)."""
    stored = perm(len(stored_shape))
    to_order = [stored.index(axis) for axis in order]
    moved = [axis for axis in to_order if stored_shape[axis] != 1]
    return None if moved == sorted(moved) else to_order


def transpose_perm(onnx_perm: list[int], rank: int) -> list[int]:
    """The TFLite TRANSPOSE permutation (physical axes) for an ONNX Transpose of ``onnx_perm``.

    Physical output axis i holds ONNX output axis L_out[i] = ONNX input axis onnx_perm[L_out[i]], which
    sits at physical input axis inverse(L_in)[that]."""
    layout = perm(rank)
    inverse = list(np.argsort(layout))
    return [int(inverse[onnx_perm[axis]]) for axis in layout]
