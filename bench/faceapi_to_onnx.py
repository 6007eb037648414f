"""face-api's networks (weights from @vladmandic/face-api's npm tarball) rebuilt in TensorFlow and converted to ONNX
with tf2onnx, or to TFLite with TensorFlow's own converter (run with TensorFlow, tf2onnx on PYTHONPATH).

    PYTHONPATH=TF2ONNX_PKGS /work/tfenv/bin/python bench/faceapi_to_onnx.py NET MANIFEST.json WEIGHTS.bin OUT SIZE

OUT.onnx: tf2onnx; OUT.tflite: ``tf.lite.TFLiteConverter`` (float32), for the caller to convert with tflite2onnx.

Standalone (no hwopt import): ``bench.mediapipe_exports`` runs it with ``--tf-python`` for its ``faceapi``
models. face-api ships its networks as weights only (TensorFlow.js weights manifests, uint8-quantized:
dequantized as TensorFlow.js does, ``q * scale + min``); the networks are its TypeScript code, which each
function here follows op for op. NET is one of:

``tiny_face_detector``: ``src/tinyYolov2/TinyYolov2Base.ts`` ``runMobilenet`` with the TinyFaceDetector config
(``isFirstLayerConv2d``, separable convolutions):

    conv0: conv2d 3x3 'valid' + bias, leaky
    maxPool 2x2 stride 2 'same'; five times: depthwiseSeparableConv (pad 1, separableConv2d 'valid', + bias,
      leaky) then maxPool 2x2 'same' (stride 2, the last stride 1)
    conv8: conv2d 1x1 'valid' + bias (no activation): the 5 anchors x (4 box + 1 score) map

with ``leaky(x) = relu(x - 0.1 x) + 0.1 x`` written as face-api writes it.

``face_expression``: ``src/faceExpressionNet/FaceExpressionNet.ts`` ``forwardInput``: ``FaceFeatureExtractor``
(``src/faceFeatureExtractor``: four ``denseBlock4``, the first opening with a 3x3 stride-2 conv, the others
with a stride-2 depthwise-separable conv, each then three separable convs whose inputs are the ReLU'd running
sums of the block's earlier outputs), a 7x7 stride-2 average pool, the fully connected layer (``fc``, 256 to
7) and a softmax over the seven expressions.

Batch 1, SIZE x SIZE; tf2onnx ``from_function`` at opset 13. Set F takes the detector through TFLite (TensorFlow
shares one scalar 0.1 among its six leaky MULs, which tflite2onnx 0.4.1 cannot broadcast, so
``bench/tflite_prepare.py --unshare`` copies it per MUL first; written as a leaky ReLU instead, tflite2onnx has no
converter for LEAKY_RELU) and the expression net through tf2onnx (tflite2onnx writes its fully connected layer as
a Gemm on the 4-D pooled tensor, which onnxruntime refuses, "First input does not have rank 2", however the
flattening is written).

The input is the network's own input: the image already resized to SIZE x SIZE, mean RGB subtracted and divided
by 255 (both nets' ``forwardInput`` preprocessing, outside the network; ``MEAN_RGB`` below). ``OUT.npz``
(``OUT.onnx.npz``, ``OUT.tflite.npz``) keeps a random input and this TensorFlow function's output on it (``x``,
``y``; ``raw``: the image before normalization), for the caller to compare face-api's own JavaScript against; for
OUT.onnx the largest difference between onnxruntime on it and the function is printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfjs_weights import decode


def weights(manifest: Path, data: Path) -> dict[str, np.ndarray]:
    raw = data.read_bytes()
    values, offset = {}, 0
    for group in json.loads(manifest.read_text()):
        found, offset = decode(raw, group["weights"], offset)
        values.update(found)
    assert offset == len(raw), (offset, len(raw))
    return values


def leaky(x):
    low = x * 0.10000000149011612
    return tf.nn.relu(x - low) + low


MEAN_RGB = {"tiny_face_detector": (117.001, 114.697, 97.404), "face_expression": (122.782, 117.001, 104.298)}


def tiny_face_detector(w):
    def separable(x, name):
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        x = tf.nn.separable_conv2d(x, w[f"{name}/depthwise_filter"], w[f"{name}/pointwise_filter"], [1, 1, 1, 1],
                                   "VALID")
        return leaky(x + w[f"{name}/bias"])

    def forward(x):
        out = leaky(tf.nn.conv2d(x, w["conv0/filters"], 1, "VALID") + w["conv0/bias"])
        out = tf.nn.max_pool2d(out, 2, 2, "SAME")
        for i in range(1, 6):
            out = separable(out, f"conv{i}")
            out = tf.nn.max_pool2d(out, 2, 2 if i < 5 else 1, "SAME")
        return tf.nn.conv2d(out, w["conv8/filters"], 1, "VALID") + w["conv8/bias"]

    return forward


def face_expression(w):
    def separable(x, name, stride):  # common/depthwiseSeparableConv.ts: 'same', + bias, no activation
        x = tf.nn.separable_conv2d(x, w[f"{name}/depthwise_filter"], w[f"{name}/pointwise_filter"],
                                   [1, stride, stride, 1], "SAME")
        return x + w[f"{name}/bias"]

    def dense_block4(x, name, first):
        if first:
            out1 = tf.nn.relu(tf.nn.conv2d(x, w[f"{name}/conv0/filters"], 2, "SAME") + w[f"{name}/conv0/bias"])
        else:
            out1 = tf.nn.relu(separable(x, f"{name}/conv0", 2))
        out2 = separable(out1, f"{name}/conv1", 1)
        in3 = tf.nn.relu(out1 + out2)
        out3 = separable(in3, f"{name}/conv2", 1)
        in4 = tf.nn.relu(out1 + (out2 + out3))
        out4 = separable(in4, f"{name}/conv3", 1)
        return tf.nn.relu(out1 + (out2 + (out3 + out4)))

    def forward(x):
        out = dense_block4(x, "dense0", True)
        for i in (1, 2, 3):
            out = dense_block4(out, f"dense{i}", False)
        out = tf.nn.avg_pool2d(out, 7, 2, "VALID")
        out = tf.reshape(out, [out.shape[0], -1])  # as2D
        return tf.nn.softmax(tf.matmul(out, w["fc/weights"]) + w["fc/bias"])

    return forward


def main() -> None:
    net, manifest, data, dst, size = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    w = weights(manifest, data)  # numpy arrays: traced into the graph as constants
    spec = tf.TensorSpec((1, size, size, 3), tf.float32, name="input")
    forward = tf.function({"tiny_face_detector": tiny_face_detector,
                           "face_expression": face_expression}[net](w), input_signature=[spec], autograph=False)

    if dst.endswith(".tflite"):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()])
        Path(dst).write_bytes(converter.convert())
    else:
        import tf2onnx

        tf2onnx.convert.from_function(forward, input_signature=[spec], opset=13, output_path=dst)
    # A random image in [0, 255) normalized as forwardInput does; ``raw`` is that image, for face-api's own code.
    raw = np.random.default_rng(0).random(spec.shape, dtype=np.float32) * 255
    x = (raw - np.array(MEAN_RGB[net], np.float32)) / 255
    y = forward(tf.constant(x)).numpy()
    np.savez(f"{dst}.npz", x=x, y=y, raw=raw)
    if dst.endswith(".tflite"):
        print(f"{dst}: TFLite (tensorflow {tf.__version__}), input {spec.shape}, output {y.shape}")
        return
    import onnxruntime as ort
    import tf2onnx

    session = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    print(f"{dst}: tf2onnx {tf2onnx.__version__} (tensorflow {tf.__version__}), input {spec.shape}, output {y.shape}; "
          f"tensorflow vs onnxruntime max abs difference {float(np.abs(got - y).max()):.1e}")


if __name__ == "__main__":
    main()
