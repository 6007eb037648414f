"""A TensorFlow.js layers model (Keras topology + weight shards) as a Keras 2 HDF5 file (run with TensorFlow).

    /work/tfenv/bin/python bench/tfjs_layers_to_keras.py MODEL.json OUT.h5 [OUT.tflite HxW]

Standalone (no hwopt import): ``bench.mediapipe_exports`` runs it with ``--tf-python`` for its ``tfjs_layers``
models, then ``bench/keras_to_onnx.py`` on the HDF5 file. ``MODEL.json`` is the layers model as TensorFlow.js
loads it (``modelTopology`` with ``model_config``, and ``weightsManifest``); each shard ``P`` of the manifest is
read from ``P.b64`` beside it, base64 text, where that exists (nsfwjs ships its shards as JavaScript modules
that export that text; ``bench.mediapipe_exports`` writes them out with node), else from the binary ``P``. The model is rebuilt with ``tf_keras``
(``model_from_json`` of ``model_config``) and every weight is set from the manifest by name
(``LAYER/WEIGHT``): all of them must be used, and all of the model's. Weights that the TensorFlow.js converter
quantized (``quantization``: uint8/uint16 with ``scale`` and ``min``) are dequantized as TensorFlow.js does
(``q * scale + min``).

UpscalerJS's ESRGAN models (set F) register two custom layers in JavaScript, rebuilt here the same way
(``CUSTOM``): ``MultiplyBeta`` (``x * beta``, beta 0.2) and ``PixelShuffle{N}x`` / ``PixelShuffle``
(``tf.nn.depth_to_space`` by the scale, NHWC). With ``OUT.tflite HxW`` the model is also converted with
TensorFlow's own ``tf.lite.TFLiteConverter`` (float32, no optimisation) from a batch-1 ``HxW`` concrete
function, and ``OUT.tflite.npz`` keeps a random input in [0, 1] and the Keras model's output on it, for the
caller to compare the ONNX file against.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import tf_keras

from tfjs_weights import decode


def weights(src: Path, manifest: list[dict]) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join(base64.b64decode((src.parent / f"{p}.b64").read_text()) if (src.parent / f"{p}.b64").is_file()
                        else (src.parent / p).read_bytes() for p in group["paths"])
        found, offset = decode(data, group["weights"])
        values.update(found)
        assert offset == len(data), (offset, len(data))
    return values


class MultiplyBeta(tf_keras.layers.Layer):
    """UpscalerJS's ``MultiplyBeta``: the input times ``beta``."""

    def __init__(self, beta: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta

    def call(self, inputs):
        return inputs * self.beta

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


class PixelShuffle(tf_keras.layers.Layer):
    """UpscalerJS's ``PixelShuffle{scale}x``: ``depthToSpace`` by ``scale`` (NHWC)."""

    def __init__(self, scale: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        import tensorflow as tf

        return tf.nn.depth_to_space(inputs, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


CUSTOM = {"MultiplyBeta": MultiplyBeta, "PixelShuffle": PixelShuffle,
          **{f"PixelShuffle{n}x": PixelShuffle for n in (2, 3, 4, 8)}}


def to_tflite(model, dst: str, size: str) -> None:
    """``dst``: the model as float32 TFLite at batch 1 and ``size`` (HxW), by TensorFlow's converter; and
    ``dst.npz``: a random input and the Keras output on it."""
    import tensorflow as tf

    h, w = (int(n) for n in size.split("x"))
    spec = tf.TensorSpec((1, h, w, model.input_shape[-1]), tf.float32, name="input")

    @tf.function(input_signature=[spec], autograph=False)
    def forward(x):
        return model(x, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], model)
    Path(dst).write_bytes(converter.convert())
    x = np.random.default_rng(0).random(spec.shape, dtype=np.float32)
    np.savez(f"{dst}.npz", x=x, y=np.asarray(model(x, training=False)))
    print(f"{dst}: TFLite (tensorflow {tf.__version__}), input {spec.shape}")


def main() -> None:
    src, dst = Path(sys.argv[1]), sys.argv[2]
    spec = json.loads(src.read_text())
    config = spec["modelTopology"]["model_config"]
    model = tf_keras.models.model_from_json(json.dumps({"class_name": config["class_name"],
                                                        "config": config["config"]}), custom_objects=CUSTOM)
    values = weights(src, spec["weightsManifest"])
    used = 0
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([values[var.name.split(":")[0]] for var in layer.weights])
            used += len(layer.weights)
    assert used == len(values), f"{used} of the model's weights set, the manifest has {len(values)}"
    model.save(dst)
    print(f"{dst}: {model.input_shape} -> {model.output_shape}, {used} weights (tf_keras {tf_keras.__version__})")
    if len(sys.argv) > 3:
        to_tflite(model, sys.argv[3], sys.argv[4])


if __name__ == "__main__":
    main()
