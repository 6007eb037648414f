"""A Keras 2 HDF5 model (as old wheels ship them) to ONNX with tf2onnx, batch 1 (run with TensorFlow).

    PYTHONPATH=TF2ONNX_PKGS /work/tfenv/bin/python bench/keras_to_onnx.py IN.hdf5 OUT.onnx OPSET [HxW]

Standalone (no hwopt import): ``bench.mediapipe_exports`` runs it with ``--tf-python`` and tf2onnx's folder
on PYTHONPATH. The model is loaded with ``tf_keras`` (Keras 2: Keras 3 does not read every Keras 2 HDF5
file), traced as a ``tf.function`` with a batch-1 input signature named ``input_1`` and converted with
``tf2onnx.convert.from_function``. Prints the largest difference between Keras and onnxruntime on a random
input in [-1, 1] (when onnxruntime is importable). ``HxW`` fixes the input's height and width where the
model leaves them free (UpscalerJS's super-resolution models); the custom layers of
``bench/tfjs_layers_to_keras.py`` (``CUSTOM``) are known to the loader. A ``.keras`` file (Keras 3, as newer
wheels ship them; set F's sklesion) is loaded with Keras 3 instead, and every one of its inputs gets a batch-1
signature (``input_1``, ``input_2``, ...), its variables frozen to constants (tf2onnx ``from_graph_def``);
the comparison then feeds random inputs in [0, 1] to all of them.
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf
import tf2onnx
import tf_keras


def keras3(src: str, dst: str, opset: int) -> None:
    """A Keras 3 ``.keras`` file, every input at batch 1 (see the docstring)."""
    import keras

    model = keras.saving.load_model(src, compile=False)
    specs = [tf.TensorSpec((1, *t.shape[1:]), tf.float32, name=f"input_{i + 1}") for i, t in enumerate(model.inputs)]

    @tf.function(input_signature=specs, autograph=False)
    def forward(*xs):
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    # Frozen first: from_function leaves some Keras 3 variables (Normalization's mean and variance) as
    # graph inputs.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
                                   output_names=[t.name for t in frozen.outputs], opset=opset, output_path=dst)
    rng = np.random.default_rng(0)
    xs = [rng.random(spec.shape, dtype=np.float32) for spec in specs]
    expected = np.asarray(model(xs if len(xs) > 1 else xs[0], training=False))
    import onnxruntime as ort

    session = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})[0]
    print(f"{dst}: written (keras {keras.__version__}); keras vs onnxruntime max abs difference "
          f"{float(np.abs(expected - got).max()):.1e}")


def main() -> None:
    src, dst, opset = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if src.endswith(".keras"):
        keras3(src, dst, opset)
        return
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
