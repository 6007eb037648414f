"""The converter registry: one function per ONNX op type, registered with ``@converter("Conv")``.

A converter takes the ``Context`` and a ``Unit`` (the node, its outputs after fusion, its fused
activation) and adds TFLite tensors and operators. The converter modules (``ops_*``) register
themselves on import; ``hwopt.tflite.ops`` imports them all and checks a whole model against them.
"""

from __future__ import annotations

from typing import Callable

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
