"""A Keras model file (``.keras``, Keras 3, as newer wheels ship them) to float32 TFLite at batch 1 (run with
TensorFlow).

    /work/tfenv/bin/python bench/keras_to_tflite.py IN.keras OUT.tflite

Standalone (no hwopt import): ``bench.mediapipe_exports`` runs it with ``--tf-python`` for its ``keras_tflite``
models, then tflite2onnx on the TFLite file. The model is loaded with Keras 3 (``keras.saving.load_model``),
traced as a ``tf.function`` with batch-1 input signatures (every input; the other dims as the model gives
them), its variables frozen to constants, and converted with TensorFlow's own ``tf.lite.TFLiteConverter`` (float32, no optimisation).
``OUT.tflite.npz`` keeps random inputs in [0, 1] (``x0``, ``x1``, ...) and the Keras model's output (``y``) on
them, for the caller to compare the ONNX file against.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    model = keras.saving.load_model(src, compile=False)
    specs = [tf.TensorSpec((1, *t.shape[1:]), tf.float32, name=f"input_{i}") for i, t in enumerate(model.inputs)]

    @tf.function(input_signature=specs, autograph=False)
    def forward(*xs):
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    # Variables frozen to constants first: Keras 3's variables otherwise stay resources (VAR_HANDLE ops).
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    Path(dst).write_bytes(converter.convert())
    rng = np.random.default_rng(0)
    xs = [rng.random(spec.shape, dtype=np.float32) for spec in specs]
    y = np.asarray(model(xs if len(xs) > 1 else xs[0], training=False))
    np.savez(f"{dst}.npz", y=y, **{f"x{i}": x for i, x in enumerate(xs)})
    print(f"{dst}: TFLite (tensorflow {tf.__version__}, keras {keras.__version__}), inputs "
          f"{[tuple(s.shape) for s in specs]}")


if __name__ == "__main__":
    main()
