"""Calibration samples from a folder of photographs (JPEG/PNG, read recursively with Pillow).

Each readable file becomes one sample: EXIF orientation applied, resized so that
it covers the model's input HxW and centre-cropped to it (``ImageOps.fit``),
3 channels, then scaled by a ``--preprocess`` preset and laid out as the
model's input (NCHW or NHWC, read from its shape). Grayscale files are
converted to RGB (counted in a warning), 16-bit PNGs are scaled to the 8-bit
range (65535 -> 255), unreadable or corrupt files are skipped with a warning;
a folder with no readable image is a ``HwoptError``.

Presets (comma-separated, one scale at most, e.g. ``imagenet,bgr``):

- scale: ``imagenet`` (``(x/255 - mean) / std``, ImageNet's RGB mean/std; the
  default), ``0-1`` (``x/255``), ``0-255`` (``x`` as is);
- channel order: ``bgr`` (the channels reversed after scaling, so ``imagenet,bgr``
  normalises each colour with its own mean/std, as Caffe-style BGR models expect);
- layout: ``nhwc`` / ``nchw`` (only needed when the input shape does not say,
  e.g. 3x3x3; otherwise the axis of size 3 decides).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from hwopt.calibration.inputs import numpy_dtype, real_inputs, sample_shape
from hwopt.errors import HwoptError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# x: HxWx3 float32 RGB in 0..255.
SCALES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "imagenet": lambda x: (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD,
    "0-1": lambda x: x / 255.0,
    "0-255": lambda x: x,
}
LAYOUTS = ("nchw", "nhwc")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}  # PNG's 16-bit gray opens as one of these
_LIST_SKIPPED = 5  # one warning line each for the first few skipped files, then a count


@dataclass(frozen=True)
class Preprocess:
    """How pixels become the model's input values (parsed from ``--preprocess``)."""

    scale: str = "imagenet"
    bgr: bool = False
    layout: str | None = None  # None: read from the input shape

    @classmethod
    def parse(cls, text: str | None) -> "Preprocess":
        if text is None or not text.strip():
            return cls()
        scales, bgr, layouts = [], False, []
        for token in (t.strip().lower() for t in text.split(",")):
            if token in SCALES:
                scales.append(token)
            elif token == "bgr":
                bgr = True
            elif token in LAYOUTS:
                layouts.append(token)
            else:
                known = ", ".join([*SCALES, "bgr", *LAYOUTS])
                raise HwoptError(f"--preprocess {text}: unknown preset {token!r} (known: {known})")
        if len(scales) > 1 or len(layouts) > 1:
            raise HwoptError(f"--preprocess {text}: give one scale ({', '.join(SCALES)}) and at most one layout")
        return cls(scales[0] if scales else "imagenet", bgr, layouts[0] if layouts else None)

    def __str__(self) -> str:
        return ",".join([self.scale] + (["bgr"] if self.bgr else []) + ([self.layout] if self.layout else []))

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 RGB in 0..255 -> HxWx3 in the model's scale and channel order."""
        x = SCALES[self.scale](rgb.astype(np.float32))
        return x[..., ::-1] if self.bgr else x


@dataclass(frozen=True)
class FolderScan:
    """The readable image files of a folder, and what reading them found."""

    root: Path
    files: tuple[Path, ...]
    grayscale: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]


def _warn(message: str) -> None:
    print(f"hwopt: warning: {message}", file=sys.stderr, flush=True)


def image_files(folder: Path) -> list[Path]:
    """JPEG/PNG files under ``folder`` (recursively, by suffix, case-insensitive), sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def scan_image_folder(folder: str | Path) -> FolderScan:
    """Decode every image file once (checks them, before any long work); warn about skipped and gray ones.

    Raises ``HwoptError`` for a missing folder or one without a readable image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HwoptError(f"{folder}: no such calibration folder")
    files = image_files(folder)
    if not files:
        raise HwoptError(f"{folder}: no JPEG or PNG file in the calibration folder (searched recursively)")
    listing = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return _scan(folder, listing)


@lru_cache(maxsize=8)
def _scan(root: Path, listing: tuple[tuple[str, int, int], ...]) -> FolderScan:
    """Cached by the files' names, sizes and times: the CLI checks early and loads later, warning once."""
    from PIL import Image

    readable, gray, skipped = [], [], []
    for name, _, _ in listing:
        path = Path(name)
        try:
            with Image.open(path) as im:
                if im.format == "JPEG":
                    im.draft("RGB", (1, 1))  # decode at 1/8 scale: the whole stream is still read and checked
                im.load()
                mode = im.mode
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            skipped.append((path, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__))
            continue
        readable.append(path)
        if mode in _GRAY_MODES:
            gray.append(path)
    for path, reason in skipped[:_LIST_SKIPPED]:
        _warn(f"{path}: skipped, not a readable image ({reason})")
    if len(skipped) > _LIST_SKIPPED:
        _warn(f"{len(skipped) - _LIST_SKIPPED} more unreadable files skipped in {root}")
    if not readable:
        raise HwoptError(f"{root}: no readable image in the calibration folder ({len(skipped)} files skipped)")
    if gray:
        _warn(f"{len(gray)} grayscale image(s) converted to RGB (first: {gray[0]})")
    return FolderScan(root, tuple(readable), tuple(gray), tuple(skipped))


def read_rgb(path: Path, height: int, width: int) -> np.ndarray:
    """``path`` as HxWx3 float32 RGB in 0..255, covering ``height`` x ``width`` and centre-cropped to it."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (2 * width, 2 * height))  # DCT-domain downscale, still at least twice the target
        im = ImageOps.exif_transpose(im)
        if im.mode in _SIXTEEN_BIT_MODES:
            # 16-bit gray: resize in float, then 0..65535 -> 0..255 (Pillow's "L" would clip at 255).
            gray = np.asarray(ImageOps.fit(im.convert("F"), (width, height), Image.BILINEAR), np.float32)
            return np.repeat((gray * (255.0 / 65535.0))[..., None], 3, axis=2)
        if im.mode != "RGB":
            # Palette, gray, CMYK, alpha: Pillow's conversions (alpha dropped; 16-bit RGB is read as 8-bit).
            im = im.convert("RGB")
        return np.asarray(ImageOps.fit(im, (width, height), Image.BILINEAR), np.float32)


def _image_input(model: onnx.ModelProto, preprocess: Preprocess) -> tuple[onnx.ValueInfoProto, str, int, int]:
    """The model's one image input, its layout and its HxW."""
    inputs = real_inputs(model)
    if len(inputs) != 1:
        raise HwoptError(f"an image folder calibrates a model with one input; this one has {len(inputs)} "
                         f"({', '.join(v.name for v in inputs)}): give an .npz with an array per input")
    value = inputs[0]
    shape, _ = sample_shape(value)
    if len(shape) != 3:
        raise HwoptError(f"input {value.name!r} has shape {shape} per sample: an image folder needs CxHxW or HxWxC")
    layout = preprocess.layout or ("nchw" if shape[0] == 3 else "nhwc" if shape[2] == 3 else None)
    if layout is None or (layout == "nchw" and shape[0] != 3) or (layout == "nhwc" and shape[2] != 3):
        raise HwoptError(f"input {value.name!r} has shape {shape} per sample: an image folder needs 3 colour "
                         f"channels (3xHxW or HxWx3)")
    height, width = shape[1:] if layout == "nchw" else shape[:2]
    return value, layout, height, width


def load_calibration_folder(path: str | Path, model: onnx.ModelProto,
                            preprocess: Preprocess | str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(samples ``input name -> array``, one group label per sample: the file's path in the folder).

    Fit/held-out splits use the groups so that no file is on both sides.
    """
    if not isinstance(preprocess, Preprocess):
        preprocess = Preprocess.parse(preprocess)
    value, layout, height, width = _image_input(model, preprocess)
    scan = scan_image_folder(path)
    dtype = numpy_dtype(value)
    samples = []
    for file in scan.files:
        x = preprocess.apply(read_rgb(file, height, width))
        if layout == "nchw":
            x = x.transpose(2, 0, 1)
        if np.issubdtype(dtype, np.integer):  # e.g. uint8 inputs of converted TFLite models, with 0-255
            limits = np.iinfo(dtype)
            x = np.clip(np.rint(x), limits.min, limits.max)
        samples.append(np.ascontiguousarray(x, dtype=dtype))
    groups = np.array([f.relative_to(scan.root).as_posix() for f in scan.files])
    return {value.name: np.stack(samples)}, groups
