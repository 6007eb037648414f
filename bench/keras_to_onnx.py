"""A Keras 2 HDF5 model (as old wheels ship them) to ONNX with tf2onnx, batch 1 (run with TensorFlow).

    PYTHONPATH=TF2ONNX_PKGS /work/tfenv/bin/python bench/keras_to_onnx.py IN.hdf5 OUT.onnx OPSET [HxW]

Standalone (no hwopt import): ``bench.mediapipe_exports`` runs it with ``--tf-python`` and tf2onnx's folder
on PYTHONPATH. The model is loaded with ``tf_keras`` (Keras 2: Keras 3 does not read every Keras 2 HDF5
file), traced as a ``tf.function`` with a batch-1 input signature named ``input_1`` and converted with
``tf2onnx.convert.from_function``. Prints the largest difference between Keras and onnxruntime on a random
input in [-1, 1] (when onnxruntime is importable). ``HxW`` fixes the input's height and width where the
model leaves them free (UpscalerJS's super-resolution models); the custom layers of
``bench/tfjs_layers_to_keras.py`` (``CUSTOM``) are known to the loader.
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf
import tf2onnx
import tf_keras


def main() -> None:
    src, dst, opset = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from tfjs_layers_to_keras import CUSTOM  # this script's folder is on sys.path when run as a script

    model = tf_keras.models.load_model(src, compile=False, custom_objects=CUSTOM)
    shape = list(model.input_shape[1:])
    if len(sys.argv) > 4:
        shape[:2] = [int(n) for n in sys.argv[4].split("x")]
    spec = (tf.TensorSpec((1, *shape), tf.float32, name="input_1"),)

    @tf.function(input_signature=spec, autograph=False)
    def forward(x):
        return model(x, training=False)

    tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset, output_path=dst)
    x = np.random.default_rng(0).uniform(-1, 1, spec[0].shape).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"{dst}: written (onnxruntime not importable: not compared)")
        return
    session = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    print(f"{dst}: written; keras vs onnxruntime max abs difference {float(np.abs(expected - got).max()):.1e}")


if __name__ == "__main__":
    main()
