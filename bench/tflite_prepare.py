"""Make a shipped TFLite model convertible to ONNX without changing what it computes (run with TensorFlow).

    /work/tfenv/bin/python bench/tflite_prepare.py [--unshare] IN.tflite OUT.tflite

Standalone (no hwopt import): ``bench.mediapipe_exports`` runs it with ``--tf-python`` before tf2onnx, for
the models whose ``Model.prepare`` says so, and with ``--unshare`` before tflite2onnx for those whose
``Model.unshare`` does. Two rewrites, each only where the model has the op:

- DENSIFY of a constant sparse weight (MediaPipe's pose_detection and face_detection_full_range_sparse
  store pruned weights that way; neither tflite2onnx nor tf2onnx reads sparse tensors): the dense values
  are what TFLite's own reference kernel computes (the interpreter without its XNNPACK delegate, every
  tensor kept); they become the DENSIFY output's buffer and the op is removed. The sparse input tensor,
  now unused, gets the same dense buffer (converters read every constant).
- MediaPipe's custom op ``Convolution2DTransposeBias`` (a transposed convolution with a bias; options
  padding, stride_w, stride_h as three int32): the builtin TRANSPOSE_CONV with the same weights, bias as
  its fourth input (TFLite >= 2.5), TransposeConvOptions with the same padding and strides, and its output
  shape as a new int32 constant. The interpreter cannot run the custom op, so the check is the builtin's
  definition; selfie_segmentation's one use is 2x2 stride 2 SAME (no overlap, no padding).

With ``--unshare`` (and only then), a third: every constant tensor that several operators read gets one copy
per further reader (a new tensor, a new buffer with the same bytes). TensorFlow's converter shares equal
constants (a residual scaling's 0.2, a leaky ReLU's 0.1) among all their operators, and tflite2onnx 0.4.1 cannot
broadcast a shared tensor (AssertionError in ``fakeBroadcast``: it reshapes each binary operator's constant in
place); with one copy per operator it can. Set F's face-api TinyFaceDetector.

Prints what it replaced, and when the input had no custom op, the largest difference between the input's
and the output's outputs in the TFLite interpreter on a random input (0.0 expected).
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

NO_DELEGATE = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _builtin(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _custom(model, op) -> bytes:
    code = model.operatorCodes[op.opcodeIndex]
    return bytes(code.customCode or b"")


def _add_buffer(model, data: bytes) -> int:
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def _opcode(model, builtin: int, version: int) -> int:
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and not code.customCode:
            code.version = max(code.version, version)
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def densify(model, src: str) -> int:
    interpreter = tf.lite.Interpreter(model_path=src, experimental_preserve_all_tensors=True,
                                      experimental_op_resolver_type=NO_DELEGATE)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    replaced = 0
    for subgraph in model.subgraphs:
        kept = []
        for op in subgraph.operators:
            if _builtin(model, op) != schema.BuiltinOperator.DENSIFY:
                kept.append(op)
                continue
            value = interpreter.get_tensor(op.outputs[0])
            dense, sparse = subgraph.tensors[op.outputs[0]], subgraph.tensors[op.inputs[0]]
            assert list(sparse.shape) == list(value.shape), (sparse.shape, value.shape)
            dense.buffer = _add_buffer(model, value.tobytes())
            sparse.sparsity, sparse.buffer = None, dense.buffer
            replaced += 1
        subgraph.operators = kept
    return replaced


def transpose_conv_bias(model) -> int:
    replaced = 0
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if _custom(model, op) != b"Convolution2DTransposeBias":
                continue
            padding, stride_w, stride_h = np.frombuffer(bytes(op.customOptions), np.int32)
            x, weights, bias = op.inputs
            out_shape = schema.TensorT()
            out_shape.shape, out_shape.type = np.array([4], np.int32), schema.TensorType.INT32
            out_shape.name = b"%s/output_shape" % subgraph.tensors[op.outputs[0]].name
            out_shape.buffer = _add_buffer(model, np.array(subgraph.tensors[op.outputs[0]].shape,
                                                           np.int32).tobytes())
            subgraph.tensors.append(out_shape)
            options = schema.TransposeConvOptionsT()
            # TfLitePadding: 1 SAME, 2 VALID; the schema's Padding: 0 SAME, 1 VALID.
            options.padding = {1: schema.Padding.SAME, 2: schema.Padding.VALID}[int(padding)]
            options.strideW, options.strideH = int(stride_w), int(stride_h)
            op.opcodeIndex = _opcode(model, schema.BuiltinOperator.TRANSPOSE_CONV, 3)
            op.inputs = np.array([len(subgraph.tensors) - 1, weights, x, bias], np.int32)
            op.builtinOptionsType = schema.BuiltinOptions.TransposeConvOptions
            op.builtinOptions, op.customOptions = options, None
            replaced += 1
    return replaced


def unshare(model) -> int:
    """One copy of a shared constant tensor per further reader (see the docstring); the number of copies."""
    import copy

    copies = 0
    for subgraph in model.subgraphs:
        readers: dict[int, list[tuple[int, int]]] = {}
        for index, op in enumerate(subgraph.operators):
            for position, tensor in enumerate(op.inputs):
                if tensor >= 0 and model.buffers[subgraph.tensors[tensor].buffer].data is not None:
                    readers.setdefault(int(tensor), []).append((index, position))
        for tensor, uses in readers.items():
            for index, position in uses[1:]:
                duplicate = copy.deepcopy(subgraph.tensors[tensor])
                duplicate.buffer = _add_buffer(model, bytes(model.buffers[duplicate.buffer].data))
                duplicate.name = b"%s/copy%d" % (bytes(duplicate.name), index)
                subgraph.tensors.append(duplicate)
                subgraph.operators[index].inputs[position] = len(subgraph.tensors) - 1
                copies += 1
    return copies


def _outputs(path: str, x: dict[int, np.ndarray] | None = None):
    interpreter = tf.lite.Interpreter(model_path=path, experimental_op_resolver_type=NO_DELEGATE)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], rng.random(detail["shape"]).astype(detail["dtype"]))
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--unshare"]
    src, dst = args
    model = flatbuffer_utils.read_model(src)
    had_custom = any(_custom(model, op) for subgraph in model.subgraphs for op in subgraph.operators)
    dense = densify(model, src) if not had_custom else 0
    transposed = transpose_conv_bias(model)
    copies = unshare(model) if "--unshare" in sys.argv else 0
    flatbuffer_utils.write_model(model, dst)
    print(f"{src}: {dense} DENSIFY replaced by dense constants, {transposed} Convolution2DTransposeBias by "
          f"TRANSPOSE_CONV, {copies} shared constants copied")
    if not had_custom:
        before, after = _outputs(src), _outputs(dst)
        print(f"largest output difference, input vs output model: "
              f"{max(float(np.abs(before[k] - after[k]).max()) for k in before)}")
    else:
        after = _outputs(dst)
        print(f"the output model runs in the TFLite interpreter: outputs {[v.shape for v in after.values()]}")


if __name__ == "__main__":
    main()
