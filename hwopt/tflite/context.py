"""The state one conversion shares: the ONNX model's constants, shapes and ranges, and the TFLite graph
growing from it. Converters (``ops_*``) ask it for input tensors and give it operators."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwopt.errors import HwoptError
from hwopt.tflite import layout
from hwopt.tflite.fusion import Unit
from hwopt.tflite.graph import Graph, Operator, Quant, Tensor
from hwopt.tflite.quantize import Ranges, activation_quant, constant_quant, quantize_values


class Context:
    def __init__(self, model: onnx.ModelProto, ranges: Ranges) -> None:
        self.graph = Graph()
        self.ranges = ranges
        self.consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}
        # value_info last: a graph output declared with a symbolic dim (``anchors``) keeps that declaration,
        # and canonicalisation records its inferred shape (once --input-shape fixed the input) in value_info.
        for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
            dims = value.type.tensor_type.shape.dim
            if value.type.tensor_type.HasField("shape"):
                self.shapes[value.name] = tuple(max(d.dim_value, 1) if d.HasField("dim_value") else 1 for d in dims)
        self.tensor_of: dict[str, int] = {}  # ONNX tensor name -> TFLite tensor index (physical layout)
        self.unit: Unit | None = None  # the unit being converted (for error messages and the layer map)

    # ONNX side
    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self.shapes:
            raise self.error(f"tensor {name!r} has no inferred shape")
        return self.shapes[name]

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def const(self, name: str, what: str = "operand") -> np.ndarray:
        if name not in self.consts:
            raise self.error(f"its {what} {name!r} is not a constant")
        return self.consts[name]

    def attrs(self) -> dict:
        assert self.unit is not None
        return {a.name: helper.get_attribute_value(a) for a in self.unit.node.attribute}

    def error(self, why: str) -> HwoptError:
        node = self.unit.node if self.unit else None
        where = f"node {node.name!r} ({node.op_type})" if node is not None else "the model"
        return HwoptError(f"{where}: cannot write it as TFLite: {why}")

    # TFLite side
    def quant_of(self, name: str) -> Quant:
        return activation_quant(*self.ranges.of(name))

    def input(self, name: str) -> int:
        """The TFLite tensor of an ONNX activation, or a new int8 constant (per-tensor, physical layout)."""
        if name in self.tensor_of:
            return self.tensor_of[name]
        if name in self.consts:
            values = self.consts[name].astype(np.float32)
            return self.constant(name, values)
        raise self.error(f"its input {name!r} was not produced by a converted node")

    def constant(self, name: str, values: np.ndarray, rank: int | None = None, quant: Quant | None = None) -> int:
        """An int8 constant operand; ``rank`` pads its shape with leading 1s to broadcast against a tensor
        of that rank (ONNX broadcasting), then moves it to the physical layout. ``quant``: quantized with
        these parameters (saturating) instead of over its own values."""
        if rank is not None and values.ndim < rank:
            values = values.reshape((1,) * (rank - values.ndim) + values.shape)
        values = layout.to_physical(values)
        if quant is None:
            q, quant = constant_quant(values)
        else:
            q = quantize_values(values, quant)
        return self.graph.add_tensor(Tensor(name, q.shape, "int8", quant, q))

    def raw_constant(self, name: str, values: np.ndarray, dtype: str, quant: Quant | None = None) -> int:
        """A constant stored as given (weights already quantized and laid out, shapes, axes)."""
        return self.graph.add_tensor(Tensor(name, tuple(values.shape), dtype, quant, values))

    def output(self, name: str, quant: Quant | None = None) -> int:
        """The TFLite tensor for an ONNX output of the unit (physical shape); ``quant`` overrides its range
        (ops that only move data keep their input's parameters, as TFLite requires)."""
        index = self.graph.add_tensor(Tensor(name, layout.physical_shape(self.shape(name)), "int8",
                                             quant or self.quant_of(name)))
        self.tensor_of[name] = index
        return index

    def internal(self, stem: str, shape: tuple[int, ...], quant: Quant) -> int:
        """A tensor between two TFLite operators of one unit (no ONNX counterpart), shape as given."""
        return self.graph.add_tensor(Tensor(stem, tuple(int(s) for s in shape), "int8", quant))

    def requantized(self, index: int, quant: Quant) -> int:
        """``index`` with the parameters ``quant``: itself when it has them, else a QUANTIZE int8 -> int8
        (which Vela runs on the NPU) into a new tensor. For the ops whose int8 kernels need their inputs
        quantized like their output (CONCATENATION, MAXIMUM, MINIMUM)."""
        if self.quant(index) == quant:
            return index
        requantized = self.internal(f"{self.graph.tensors[index].name}/requantized", self.tshape(index), quant)
        self.emit("QUANTIZE", [index], [requantized])
        return requantized

    def quant(self, index: int) -> Quant:
        q = self.graph.tensors[index].quant
        assert q is not None
        return q

    def tshape(self, index: int) -> tuple[int, ...]:
        return self.graph.tensors[index].shape

    def emit(self, opcode: str, inputs: list[int], outputs: list[int],
             options: tuple[str, dict] | None = None) -> None:
        assert self.unit is not None
        self.graph.add_operator(Operator(opcode, inputs, outputs, options, self.unit.onnx_nodes))
