"""``hwopt recover``: load the two models and the samples, run the recipe, write and report.

Imported only after ``require_torch()``: it imports torch through ``train``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from hwopt.calibration.samples import Samples, calibration_split, read_samples, sample_count
from hwopt.errors import HwoptError
from hwopt.fidelity.metrics import METRICS
from hwopt.recover.labels import TaskLabels
from hwopt.recover.train import RecoveryResult, RecoverySettings, recover

UNLABELLED_EVAL = 64  # held-out samples split off --calibration without labels (agreement is judged per epoch)


def checkpoint_path(output: Path) -> Path:
    """Where a recovery writing ``output`` keeps its resumable state (removed once ``output`` is written)."""
    return output.with_name(output.name + ".recover-checkpoint.pt")


def check_same_signature(original: onnx.ModelProto, rewritten: onnx.ModelProto, path: Path) -> None:
    """The rewritten model must take and give the original's tensors (hwopt keeps them)."""
    initializers = {t.name for t in original.graph.initializer} | {t.name for t in rewritten.graph.initializer}
    for kind in ("input", "output"):
        ours = [v.name for v in getattr(rewritten.graph, kind) if v.name not in initializers]
        theirs = [v.name for v in getattr(original.graph, kind) if v.name not in initializers]
        if ours != theirs:
            raise HwoptError(f"{path}: its graph {kind}s {ours} are not the original's {theirs}: pass the model hwopt "
                             f"wrote from this original")


def samples(original: onnx.ModelProto, calibration: Path, heldout: Path | None, count: int, eval_count: int | None,
            seed: int, preprocess: str | None = None,
            labels: str = "auto") -> tuple[Samples, Samples, str, tuple[np.ndarray, np.ndarray] | None]:
    """(training samples, held-out samples, how they were split, their labels or None).

    ``labels``: ``hwopt.calibration.labels`` mode. Without ``heldout``, labelled data holds out every
    sample of its split (accuracy on 64 samples is +-6 points at 95%) unless ``eval_count`` says otherwise;
    unlabelled data holds out at most 64."""
    if heldout is not None:
        train, _, train_labels = read_samples(original, calibration, preprocess, labels)
        judged, _, judged_labels = read_samples(original, heldout, preprocess, labels)
        if (train_labels is None) != (judged_labels is None):
            have, lack = (calibration, heldout) if judged_labels is None else (heldout, calibration)
            raise HwoptError(f"{have} is labelled but {lack} is not: give labels on both sides (or --labels none)")
        train = {k: v[:count] for k, v in train.items()}
        if judged_labels is not None:
            train_labels = train_labels.take(np.arange(sample_count(train)))
        split = f"{sample_count(train)} from {calibration} trained on, {sample_count(judged)} from {heldout} held out"
        found = None if train_labels is None else (train_labels.values, judged_labels.values)
    else:
        parts = calibration_split(original, calibration, count, None, seed, preprocess, labels=labels)
        train, judged = parts.fit, parts.held_out
        cap = eval_count if eval_count is not None else (None if parts.labels else UNLABELLED_EVAL)
        judged = {k: v[:cap] for k, v in judged.items()}
        split = (f"{sample_count(train)} samples of {calibration} trained on, {sample_count(judged)} held out "
                 f"({parts.info['split']})")
        found = None if not parts.labels else (parts.labels["fit"].values, parts.labels["held_out"].values[:cap])
    if found is not None:
        split += f"; labelled ({len(np.unique(np.concatenate(found)))} classes present)"
    return train, judged, split, found


def summary(result: RecoveryResult) -> dict:
    """The figures of a recovery run, as the report and the JSON show them."""
    figures = {
        "metric": result.after.metric,
        "label": METRICS[result.after.metric].label,
        "before": result.before.value,
        "after": result.after.value,
        "held_out_samples": result.after.samples,
        "blocks": [b.id for b in result.blocks],
        "trained_parameters": {"blocks": result.trained_blocks, "end_to_end": result.trained_all},
        "epochs": [asdict(e) for e in result.history],
        "seconds": round(result.seconds, 1),
        "stopped_by": result.stopped_by,
        "written_epoch": result.best_epoch,
        "resumed_epochs": result.resumed_from,
        "onnxruntime_vs_torch_rel_max_abs": result.check.worst_rel_max_abs,
        "rel_l2": {"before": result.before.rel_l2, "after": result.after.rel_l2},
    }
    if result.accuracy is not None:
        figures["accuracy"] = result.accuracy.to_dict()
    else:  # label-free: no accuracy to show per epoch
        for epoch in figures["epochs"]:
            epoch.pop("accuracy")
    return figures


def run_recovery(original: onnx.ModelProto, rewritten: onnx.ModelProto, train: Samples, heldout: Samples,
                 settings: RecoverySettings, output: Path, progress, log: Callable[[str], None],
                 metric: str = "auto", labels: tuple[np.ndarray, np.ndarray] | None = None,
                 label_weight: float = 0.5) -> RecoveryResult:
    task = None if labels is None else TaskLabels(labels[0], labels[1], label_weight)
    return recover(original, rewritten, train, heldout, settings, progress, log, checkpoint_path(output), metric,
                   labels=task)
