"""Converting ONNX nodes with the registered converters (``hwopt.tflite.registry``); ``supported`` is
checked for the whole model before any work, so an op without a converter is one clear error naming the node.
"""

from __future__ import annotations

import onnx

# The converter modules register themselves on import.
from hwopt.tflite import ops_conv, ops_elementwise, ops_pool, ops_shape  # noqa: F401
from hwopt.errors import HwoptError
from hwopt.tflite.context import Context
from hwopt.tflite.fusion import Unit
from hwopt.tflite.registry import CONVERTERS
def check_supported(nodes: list[onnx.NodeProto]) -> None:
    """Refuse, before any work, a model with a node no converter handles (the first one, named)."""
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTERS:
            raise HwoptError(f"node {node.name!r} ({node.op_type}): the TFLite writer has no converter for "
                             f"{node.op_type} (it converts: {', '.join(sorted(CONVERTERS))})")


def convert(ctx: Context, unit: Unit) -> None:
    ctx.unit = unit
    CONVERTERS[unit.node.op_type](ctx, unit)
