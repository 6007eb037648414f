"""The converter registry: one function per ONNX op type, ``@converter("Conv")``.

A converter takes the ``Context`` and a ``Unit`` (the node, its outputs after fusion, its fused
activation) and adds TFLite tensors and operators. ``supported`` is checked for the whole model before
any work, so an op without a converter is one clear error naming the node.
"""

from __future__ import annotations

from typing import Callable

import onnx

from hwopt.errors import HwoptError
from hwopt.tflite.context import Context
from hwopt.tflite.fusion import Unit

Converter = Callable[[Context, Unit], None]
CONVERTERS: dict[str, Converter] = {}

ACTIVATIONS = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}  # ActivationFunctionType


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def register(function: Converter) -> Converter:
        for op in op_types:
            CONVERTERS[op] = function
        return function

    return register


def _load() -> None:
    # The converter modules register themselves on import.
    from hwopt.tflite import ops_conv, ops_elementwise, ops_pool, ops_shape  # noqa: F401


def check_supported(nodes: list[onnx.NodeProto]) -> None:
    """Refuse, before any work, a model with a node no converter handles (the first one, named)."""
    _load()
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTERS:
            raise HwoptError(f"node {node.name!r} ({node.op_type}): the TFLite writer has no converter for "
                             f"{node.op_type} (it converts: {', '.join(sorted(CONVERTERS))})")


def convert(ctx: Context, unit: Unit) -> None:
    _load()
    ctx.unit = unit
    CONVERTERS[unit.node.op_type](ctx, unit)
