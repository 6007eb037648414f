"""TensorFlow.js weight manifests: the values of a weights group from its binary data (no TensorFlow needed).

Shared by ``bench/tfjs_layers_to_keras.py`` (one data file per group) and ``bench/faceapi_to_onnx.py`` (one
file for all groups): float32 values as stored, uint8/uint16 ones dequantized as ``q * scale + min``.
"""

from __future__ import annotations

import numpy as np


def decode(data: bytes, specs: list[dict], offset: int = 0) -> tuple[dict[str, np.ndarray], int]:
    """(name -> array for each entry of ``specs``, read from ``data`` at ``offset`` on; the offset after them)."""
    values: dict[str, np.ndarray] = {}
    for w in specs:
        n = int(np.prod(w["shape"]))
        q = w.get("quantization")
        if q:
            part = np.frombuffer(data, {"uint8": np.uint8, "uint16": np.uint16}[q["dtype"]], n, offset)
            value = part.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
        else:
            part = np.frombuffer(data, np.float32, n, offset)
            value = part.copy()
        offset += part.nbytes
        values[w["name"]] = value.reshape(w["shape"])
    return values, offset
