"""Run a written TFLite file with LiteRT in the ONNX model's terms: float arrays in ONNX layout in and out.

Inputs are quantized with the file's int8 parameters and permuted to the stored layout (NHWC for 4-D);
outputs are dequantized and permuted back. Needs ``ai-edge-litert`` (the test extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwopt.errors import HwoptError
from hwopt.tflite.writer import WriteResult


def run_tflite(path: str | Path, result: WriteResult, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One inference; ``feeds`` are single samples in the ONNX shapes (batch included)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ModuleNotFoundError:
        raise HwoptError("running TFLite needs LiteRT: pip install ai-edge-litert") from None
    from ai_edge_litert.interpreter import OpResolverType

    # LiteRT's own int8 kernels, not the XNNPack delegate (which refuses some int8 ops, e.g. half-pixel
    # bilinear resize): the kernels TFLite Micro on an Ethos-U system mirrors.
    interpreter = Interpreter(model_path=str(path), num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    by_name = {d["name"]: d for d in interpreter.get_input_details()}
    for boundary in result.inputs:
        x = np.asarray(feeds[boundary.name], np.float32).reshape(boundary.onnx_shape).transpose(boundary.perm)
        q = np.clip(np.round(x / boundary.scale) + boundary.zero_point, -128, 127).astype(np.int8)
        interpreter.set_tensor(by_name[boundary.name]["index"], q)
    interpreter.invoke()
    outputs = {d["name"]: d for d in interpreter.get_output_details()}
    values = {}
    for boundary in result.outputs:
        q = interpreter.get_tensor(outputs[boundary.name]["index"])
        real = (q.astype(np.float32) - boundary.zero_point) * boundary.scale
        values[boundary.name] = real.transpose(np.argsort(boundary.perm))
    return values
