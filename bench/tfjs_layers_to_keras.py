"""A TensorFlow.js layers model (Keras topology + weight shards) as a Keras 2 HDF5 file (run with TensorFlow).

    /work/tfenv/bin/python bench/tfjs_layers_to_keras.py MODEL.json OUT.h5

Standalone (no hwopt import): ``bench.mediapipe_exports`` runs it with ``--tf-python`` for its ``tfjs_layers``
models, then ``bench/keras_to_onnx.py`` on the HDF5 file. ``MODEL.json`` is the layers model as TensorFlow.js
loads it (``modelTopology`` with ``model_config``, and ``weightsManifest``); each shard ``P`` of the manifest is
read from ``P.b64`` beside it, base64 text, where that exists (nsfwjs ships its shards as JavaScript modules
that export that text; ``bench.mediapipe_exports`` writes them out with node), else from the binary ``P``. The model is rebuilt with ``tf_keras``
(``model_from_json`` of ``model_config``) and every weight is set from the manifest by name
(``LAYER/WEIGHT``): all of them must be used, and all of the model's. Weights that the TensorFlow.js converter
quantized (``quantization``: uint8/uint16 with ``scale`` and ``min``) are dequantized as TensorFlow.js does
(``q * scale + min``).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import tf_keras


def weights(src: Path, manifest: list[dict]) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join(base64.b64decode((src.parent / f"{p}.b64").read_text()) if (src.parent / f"{p}.b64").is_file()
                        else (src.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"]))
            q = w.get("quantization")
            if q:
                raw = np.frombuffer(data, {"uint8": np.uint8, "uint16": np.uint16}[q["dtype"]], n, offset)
                value = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
            else:
                raw = np.frombuffer(data, np.float32, n, offset)
                value = raw.copy()
            offset += raw.nbytes
            values[w["name"]] = value.reshape(w["shape"])
        assert offset == len(data), (offset, len(data))
    return values


def main() -> None:
    src, dst = Path(sys.argv[1]), sys.argv[2]
    spec = json.loads(src.read_text())
    config = spec["modelTopology"]["model_config"]
    model = tf_keras.models.model_from_json(json.dumps({"class_name": config["class_name"],
                                                        "config": config["config"]}))
    values = weights(src, spec["weightsManifest"])
    used = 0
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([values[var.name.split(":")[0]] for var in layer.weights])
            used += len(layer.weights)
    assert used == len(values), f"{used} of the model's weights set, the manifest has {len(values)}"
    model.save(dst)
    print(f"{dst}: {model.input_shape} -> {model.output_shape}, {used} weights (tf_keras {tf_keras.__version__})")


if __name__ == "__main__":
    main()
