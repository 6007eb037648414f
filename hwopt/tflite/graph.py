"""The TFLite graph being written, before it becomes a flatbuffer: tensors, operators, graph I/O.

A plain in-memory form so converters (``ops_*``) only say *what* the graph is; ``schema`` alone knows how
the TFLite flatbuffer spells it. Every operator remembers the ONNX nodes it came from, which is how a
Vela per-layer row is mapped back to the ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Quant:
    """Affine quantization: real = scale * (q - zero_point), per tensor or per channel along ``axis``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # int8 | int32 | float32 (TFLite TensorType names, lower case)
    quant: Quant | None = None
    data: np.ndarray | None = None  # constants only


@dataclass
class Operator:
    opcode: str  # a BuiltinOperator name, e.g. "CONV_2D"
    inputs: list[int]  # tensor indices; -1 for an omitted optional input
    outputs: list[int]
    options: tuple[str, dict[str, Any]] | None = None  # ("Conv2DOptions", {"Padding": 1, ...})
    onnx_nodes: tuple[str, ...] = ()


@dataclass
class Graph:
    tensors: list[Tensor] = field(default_factory=list)
    operators: list[Operator] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    _names: dict[str, int] = field(default_factory=dict)

    def add_tensor(self, tensor: Tensor) -> int:
        """Add a tensor; a name already taken gets a numbered suffix (TFLite names need not be unique, but
        Vela's per-layer report is only useful when they are)."""
        name, k = tensor.name, 1
        while name in self._names:
            name, k = f"{tensor.name}:{k}", k + 1
        tensor.name = name
        self._names[name] = len(self.tensors)
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def add_operator(self, op: Operator) -> None:
        self.operators.append(op)
