"""Labelled samples: the task's own data, for recovery that retrains on it (no torch here).

Two conventions, both checked before any long work (one line, ``HwoptError``):

- an ``.npz`` with a ``label`` array: one integer class index per sample, beside the arrays named
  after the graph inputs (and the optional ``_group``, the source of each sample);
- an image folder with one sub-folder per class (torchvision's ImageFolder convention): the class
  index of an image is the rank of its first-level sub-folder among the sorted sub-folder names.
  Folders are read as labelled only when asked (``--labels folders``): a folder of photos sorted
  by date or camera would otherwise become classes.

Labels are only for classifiers: the model must have one output ``[N, C]``, and every label must
be a class index below C (a folder must have exactly C class sub-folders).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from hwopt.errors import HwoptError

LABEL_KEY = "label"
MODES = ("auto", "folders", "none")  # auto: an .npz's label array; folders: ImageFolder too; none: ignore labels


@dataclass(frozen=True)
class Labels:
    """One class index per sample, and the class names when the data has them (folders)."""

    values: np.ndarray  # int64, one per sample
    classes: tuple[str, ...] = ()  # index -> name (ImageFolder); empty for an .npz

    def take(self, index: np.ndarray) -> "Labels":
        return Labels(self.values[index], self.classes)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise HwoptError(f"--labels {mode!r}: one of {', '.join(MODES)}")
    return mode


def class_count(model: onnx.ModelProto, source: str) -> int:
    """The class count C of a classifier's one ``[N, C]`` output (labels need one)."""
    outputs = list(model.graph.output)
    dims = [d.dim_value for d in outputs[0].type.tensor_type.shape.dim] if len(outputs) == 1 else []
    if len(outputs) != 1 or len(dims) != 2 or dims[1] < 2:
        shapes = ", ".join(f"{o.name} {[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]}"
                           for o in outputs)
        raise HwoptError(f"{source}: labels train a classifier with one [N, C] output (C >= 2); this model "
                         f"outputs {shapes}: drop the labels (--labels none) for label-free recovery")
    return dims[1]


def check_labels(values: np.ndarray, count: int, classes: int, source: str) -> np.ndarray:
    """``values`` as int64 class indices, one per sample, each in [0, classes); else one line."""
    values = np.asarray(values)
    if values.ndim != 1 or len(values) != count:
        raise HwoptError(f"{source}: array {LABEL_KEY!r} must hold one class index per sample ({count}), got shape "
                         f"{values.shape}")
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise HwoptError(f"{source}: array {LABEL_KEY!r} holds {int(bad.sum())} values that are not whole "
                             f"numbers (NaN, Inf or fractions; the first: sample {first}, {values[first]!r}): "
                             f"labels are class indices")
    elif values.dtype.kind not in "iub":
        raise HwoptError(f"{source}: array {LABEL_KEY!r} holds {values.dtype.name} values; labels are integer class "
                         f"indices 0..{classes - 1}")
    if len(values) and (values.min() < 0 or values.max() >= classes):
        worst = values.min() if values.min() < 0 else values.max()
        raise HwoptError(f"{source}: label {int(worst)} is not a class of this model: its output has {classes} "
                         f"classes (labels 0..{classes - 1})")
    return values.astype(np.int64)


def npz_labels(path: Path, count: int, classes: int) -> Labels | None:
    """The ``label`` array of a calibration .npz, checked; None when it has none."""
    with np.load(path, allow_pickle=False) as archive:
        if LABEL_KEY not in archive.files:
            return None
        values = archive[LABEL_KEY]
    return Labels(check_labels(values, count, classes, str(path)))


def folder_labels(root: Path, files: np.ndarray, classes: int) -> Labels:
    """Labels of an ImageFolder: ``files`` are the images' paths relative to ``root`` (posix)."""
    loose = [f for f in files if "/" not in f]
    if loose:
        raise HwoptError(f"{root}: {len(loose)} image(s) outside a class sub-folder (the first: {loose[0]}); with "
                         f"--labels folders every image sits in a sub-folder named after its class")
    names = tuple(sorted({f.split("/", 1)[0] for f in files}))
    if len(names) != classes:
        raise HwoptError(f"{root}: {len(names)} class sub-folders ({', '.join(names[:5])}"
                         f"{', ...' if len(names) > 5 else ''}) but the model's output has {classes} classes: one "
                         f"sub-folder per class, sorted names give the class index")
    rank = {name: i for i, name in enumerate(names)}
    return Labels(np.array([rank[f.split("/", 1)[0]] for f in files], np.int64), names)


def load_labels(path: Path, model: onnx.ModelProto, count: int, groups: np.ndarray | None, mode: str) -> Labels | None:
    """The labels of the samples read from ``path`` (``groups``: a folder's relative file paths), or None
    when the data is unlabelled or ``mode`` says to ignore them."""
    check_mode(mode)
    if mode == "none":
        return None
    if path.is_dir():
        if mode != "folders":
            return None
        return folder_labels(path, np.asarray(groups), class_count(model, str(path)))
    with np.load(path, allow_pickle=False) as archive:
        labelled = LABEL_KEY in archive.files
    if not labelled:
        if mode == "folders":
            raise HwoptError(f"--labels folders: {path} is a file; it names an image folder with one sub-folder per "
                             f"class (an .npz brings its labels in a {LABEL_KEY!r} array)")
        return None
    return npz_labels(path, count, class_count(model, str(path)))


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """The share of samples whose top-1 class (argmax over the last axis) is their label."""
    return float((scores.reshape(len(labels), -1).argmax(axis=1) == labels).mean()) if len(labels) else float("nan")
