"""``Graph`` -> TFLite flatbuffer bytes, with the schema bindings Ethos-U Vela itself ships.

``ethosu.vela.tflite`` is the flatc-generated Python module tree of the TFLite schema that Vela reads
models with, so a file built with it is, by construction, one Vela parses; it comes with the ``ethosu``
dependency (``ethos-u-vela``) and no TensorFlow. Options tables are built by name
(``("Conv2DOptions", {"Padding": 1})`` calls ``Conv2DOptionsStart`` / ``...AddPadding`` / ``...End``),
so a converter never touches the builder.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from hwopt.errors import HwoptError
from hwopt.tflite.graph import Graph, Operator, Quant, Tensor

_TENSOR_TYPES = {"float32": "FLOAT32", "int32": "INT32", "int8": "INT8", "uint8": "UINT8", "int64": "INT64"}
_BUFFER_ALIGNMENT = 16  # kernels read int32 biases and int8 weights in place: keep every buffer aligned
_SCHEMA_VERSION = 3


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"ethosu.vela.tflite.{name}")
    except ModuleNotFoundError:
        raise HwoptError("writing TFLite needs the schema bindings of Arm's Vela: pip install ethos-u-vela==5.2.0 "
                         "(ethos-u-vela)") from None


def _enum(module: str, member: str) -> int:
    enum = getattr(_module(module), module)
    try:
        return int(getattr(enum, member))
    except AttributeError:
        raise HwoptError(f"the TFLite schema has no {module}.{member}") from None


def _bytes_vector(builder, data: bytes) -> int:
    builder.StartVector(1, len(data), _BUFFER_ALIGNMENT)
    builder.head = builder.head - len(data)
    builder.Bytes[builder.head:builder.head + len(data)] = data
    builder.vectorNumElems = len(data)
    return builder.EndVector()


def _offsets_vector(builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _quantization(builder, quant: Quant) -> int:
    m = _module("QuantizationParameters")
    scale = builder.CreateNumpyVector(np.asarray(quant.scale, np.float32))
    zero = builder.CreateNumpyVector(np.asarray(quant.zero_point, np.int64))
    m.Start(builder)
    m.AddScale(builder, scale)
    m.AddZeroPoint(builder, zero)
    m.AddQuantizedDimension(builder, quant.axis)
    return m.End(builder)


def _tensor(builder, tensor: Tensor, buffer: int) -> int:
    m = _module("Tensor")
    name = builder.CreateString(tensor.name)
    shape = builder.CreateNumpyVector(np.asarray(tensor.shape, np.int32))
    quant = _quantization(builder, tensor.quant) if tensor.quant is not None else None
    m.Start(builder)
    m.AddShape(builder, shape)
    m.AddType(builder, _enum("TensorType", _TENSOR_TYPES[tensor.dtype]))
    m.AddBuffer(builder, buffer)
    m.AddName(builder, name)
    if quant is not None:
        m.AddQuantization(builder, quant)
    return m.End(builder)


def _options(builder, options: tuple[str, dict]) -> tuple[int, int]:
    """The options table and its union type."""
    kind, fields = options
    m = _module(kind)
    getattr(m, f"{kind}Start")(builder)
    for field, value in fields.items():
        getattr(m, f"{kind}Add{field}")(builder, value)
    return _enum("BuiltinOptions", kind), getattr(m, f"{kind}End")(builder)


def _operator(builder, op: Operator, opcode_index: int) -> int:
    m = _module("Operator")
    inputs = builder.CreateNumpyVector(np.asarray(op.inputs, np.int32))
    outputs = builder.CreateNumpyVector(np.asarray(op.outputs, np.int32))
    options = _options(builder, op.options) if op.options else None
    m.Start(builder)
    m.AddOpcodeIndex(builder, opcode_index)
    m.AddInputs(builder, inputs)
    m.AddOutputs(builder, outputs)
    if options is not None:
        m.AddBuiltinOptionsType(builder, options[0])
        m.AddBuiltinOptions(builder, options[1])
    return m.End(builder)


def _operator_code(builder, code: int) -> int:
    m = _module("OperatorCode")
    m.Start(builder)
    # Codes past 127 live in builtin_code; the int8 field keeps PLACEHOLDER_FOR_GREATER_OP_CODES (127).
    m.AddDeprecatedBuiltinCode(builder, min(code, 127))
    m.AddBuiltinCode(builder, code)
    m.AddVersion(builder, 1)
    return m.End(builder)


def _buffer(builder, data: bytes | None) -> int:
    m = _module("Buffer")
    vector = _bytes_vector(builder, data) if data else None
    m.Start(builder)
    if vector is not None:
        m.AddData(builder, vector)
    return m.End(builder)


def serialize(graph: Graph, description: str = "hwopt") -> bytes:
    """The graph as a TFLite model file (one subgraph)."""
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    # Buffer 0 is the schema's empty sentinel; each constant gets its own buffer.
    payloads: list[bytes | None] = [None]
    buffer_of: list[int] = []
    for tensor in graph.tensors:
        if tensor.data is None:
            buffer_of.append(0)
        else:
            payloads.append(np.ascontiguousarray(tensor.data).astype(tensor.data.dtype.newbyteorder("<")).tobytes())
            buffer_of.append(len(payloads) - 1)
    codes = sorted({_enum("BuiltinOperator", op.opcode) for op in graph.operators})
    code_index = {code: i for i, code in enumerate(codes)}

    buffers = [_buffer(builder, data) for data in payloads]
    tensors = [_tensor(builder, t, b) for t, b in zip(graph.tensors, buffer_of)]
    operators = [_operator(builder, op, code_index[_enum("BuiltinOperator", op.opcode)]) for op in graph.operators]
    op_codes = [_operator_code(builder, code) for code in codes]

    subgraph = _table(builder, "SubGraph", [
        ("Tensors", _offsets_vector(builder, tensors)),
        ("Inputs", builder.CreateNumpyVector(np.asarray(graph.inputs, np.int32))),
        ("Outputs", builder.CreateNumpyVector(np.asarray(graph.outputs, np.int32))),
        ("Operators", _offsets_vector(builder, operators)),
        ("Name", builder.CreateString("main"))])
    model = _table(builder, "Model", [
        ("Version", _SCHEMA_VERSION),
        ("OperatorCodes", _offsets_vector(builder, op_codes)),
        ("Subgraphs", _offsets_vector(builder, [subgraph])),
        ("Description", builder.CreateString(description)),
        ("Buffers", _offsets_vector(builder, buffers))])
    builder.Finish(model, file_identifier=b"TFL3")
    return bytes(builder.Output())


def _table(builder, table: str, fields: list[tuple[str, object]]) -> int:
    """One flatbuffer table of Vela's generated schema: its fields added in order (children built first)."""
    module = _module(table)
    module.Start(builder)
    for field, value in fields:
        getattr(module, "Add" + field)(builder, value)
    return module.End(builder)
