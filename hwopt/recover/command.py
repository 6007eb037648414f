"""``hwopt recover``: load the two models and the samples, run the recipe, write and report.

Imported only after ``require_torch()``: it imports torch through ``train``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

import onnx

from hwopt.calibration.samples import Samples, calibration_sets, load_calibration
from hwopt.errors import HwoptError
from hwopt.fidelity.metrics import METRICS
from hwopt.recover.train import RecoveryResult, RecoverySettings, recover


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


def samples(original: onnx.ModelProto, calibration: Path, heldout: Path | None, count: int, eval_count: int,
            seed: int) -> tuple[Samples, Samples, str]:
    """(training samples, held-out samples, how they were split)."""
    if heldout is not None:
        train = load_calibration(calibration, original)
        judged = load_calibration(heldout, original)
        train = {k: v[:count] for k, v in train.items()}
        split = f"{len(next(iter(train.values())))} from {calibration} trained on, {len(next(iter(judged.values())))} " \
                f"from {heldout} held out"
        return train, judged, split
    train, judged = calibration_sets(original, calibration, count, eval_count, seed)
    split = (f"{len(next(iter(train.values())))} samples of {calibration} trained on, the last "
             f"{len(next(iter(judged.values())))} held out")
    return train, judged, split


def summary(result: RecoveryResult) -> dict:
    """The figures of a recovery run, as the report and the JSON show them."""
    return {
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


def run_recovery(original: onnx.ModelProto, rewritten: onnx.ModelProto, train: Samples, heldout: Samples,
                 settings: RecoverySettings, output: Path, progress, log: Callable[[str], None],
                 metric: str = "auto") -> RecoveryResult:
    return recover(original, rewritten, train, heldout, settings, progress, log, checkpoint_path(output), metric)
