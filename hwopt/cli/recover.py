"""``hwopt recover``: win back an inexact rewrite's fidelity: distil the rewritten model from the original on unlabelled
samples, or retrain it on labelled ones (with distillation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hwopt.errors import HwoptError

from hwopt.cli.app import app
from hwopt.cli.common import (stdout, stderr, InputShapes, FidelityOption, LabelsOption, LabelWeight, Preprocessing,
                              user_errors, input_shapes, progress_bar)


@app.command()
def recover(
    original: Path = typer.Argument(..., help="the original ONNX model (never modified)"),
    rewritten: Path = typer.Argument(..., help="the model hwopt wrote from it (hwopt apply / optimize)"),
    output: Path = typer.Option(..., "-o", "--output", help="where to write the recovered model"),
    calibration: Path = typer.Option(..., "--calibration", help="training samples: .npz with arrays named after "
                                     "the inputs (and optionally 'label', '_group'), or a folder of images"),
    heldout: Optional[Path] = typer.Option(None, "--heldout", help="samples to judge on, never trained on "
                                           "(default: a part of --calibration, whole groups/files)"),
    labels: str = LabelsOption,
    label_weight: float = LabelWeight,
    preprocess: Optional[str] = Preprocessing,
    epochs: Optional[int] = typer.Option(None, "--recover-epochs", min=1, help="epochs, both phases together "
                                         "(deterministic on CPU)"),
    budget: Optional[str] = typer.Option(None, "--recover-time", help="training time budget, e.g. 10m, 90s "
                                         "(default 10m; with --recover-epochs: a cap, default none)"),
    lr: float = typer.Option(5e-4, "--lr", min=0.0, help="Adam step relative to each weight tensor's RMS "
                             "(block phase: 4x)"),
    batch: int = typer.Option(32, "--batch", min=1, help="samples per training step"),
    block_share: float = typer.Option(0.25, "--block-share", min=0.0, max=0.9, help="share of the epochs (or time) "
                                      "spent on block-wise reconstruction before end-to-end distillation"),
    train_all: bool = typer.Option(True, "--train-all/--train-rewritten", help="end to end, train every weight "
                                   "or only the rewritten ones"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads (results depend on it)"),
    ema: float = typer.Option(0.0, "--ema", min=0.0, max=0.9999, help="judge and write an exponential moving "
                              "average of the weights (decay per step, e.g. 0.9; 0: the last weights)"),
    fidelity: str = FidelityOption,
    calibration_samples: int = typer.Option(100_000, "--calibration-samples", min=1, help="at most this many "
                                            "training samples"),
    eval_samples: Optional[int] = typer.Option(None, "--eval-samples", min=1, help="held-out samples split off "
                                               "--calibration when there is no --heldout (default: 64; with labels: "
                                               "all of the held-out quarter)"),
    input_shape: Optional[List[str]] = InputShapes,
    seed: int = typer.Option(0, "--seed", help="seed of the sampling, augmentation and training"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on stdout"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress"),
) -> None:
    """Win back an inexact rewrite's fidelity: distil the rewritten model from the original on unlabelled samples,
    or retrain it on labelled ones (cross-entropy plus distillation), reporting held-out accuracy."""
    with user_errors():
        from hwopt.calibration.labels import check_mode

        check_mode(labels)
        from hwopt.recover import require_torch
        from hwopt.recover.budget import parse_duration

        require_torch()
        seconds = parse_duration(budget or "10m") if epochs is None or budget else None
        protect = [original, rewritten, calibration] + ([heldout] if heldout else [])
        if any(output.resolve() == p.resolve() for p in protect):
            raise HwoptError(f"refusing to overwrite the input {output}: choose another -o path")
        from hwopt.calibration.samples import check_calibration_source

        for path in [calibration] + ([heldout] if heldout else []):
            check_calibration_source(path, preprocess)
        from hwopt.canonical.canonicalize import load_canonical
        from hwopt.io.model import apply_input_shapes, load_model, save_model
        from hwopt.recover.command import check_same_signature, run_recovery, samples, summary
        from hwopt.recover.train import RecoverySettings

        _, canonical, _ = load_canonical(original, input_shapes(input_shape), seed=seed)
        student = load_model(rewritten)
        apply_input_shapes(student, input_shapes(input_shape))
        check_same_signature(canonical, student, rewritten)
        from hwopt.fidelity.metrics import METRICS

        if fidelity != "auto" and fidelity not in METRICS:
            raise HwoptError(f"--fidelity {fidelity!r}: metrics are auto, {', '.join(METRICS)}")
        train, judged, split, found = samples(canonical, calibration, heldout, calibration_samples, eval_samples, seed,
                                              preprocess, labels)
        settings = RecoverySettings(epochs=epochs, seconds=seconds, seed=seed, lr=lr, batch=batch,
                                    train_all=train_all, threads=threads, block_share=block_share, ema=ema)

        def log(line: str) -> None:
            if not quiet:
                stderr.print(line, markup=False, highlight=False)

        log(f"recover: {split}")
        with progress_bar(quiet or as_json) as progress:
            result = run_recovery(canonical, student, train, judged, settings, output, progress, log, fidelity, found,
                                  label_weight)
        save_model(result.model, output, protect=protect)
        figures = summary(result)
        if as_json:
            print(json.dumps({"output": str(output), "split": split, **figures}, indent=2))
        elif not quiet:
            stdout.print(f"held-out {figures['label']} with the original ({figures['held_out_samples']} "
                         f"samples): before {figures['before']:.2%}, after {figures['after']:.2%}; "
                         f"{len(result.history)} epochs in {figures['seconds']:.0f} s; rewritten blocks trained: "
                         f"{', '.join(figures['blocks']) or 'none found (end to end only)'}", highlight=False)
            if "accuracy" in figures:
                acc = figures["accuracy"]
                stdout.print(f"held-out accuracy against the labels ({acc['samples']} samples): original "
                             f"{acc['original']:.2%}, rewritten before {acc['before']:.2%}, after {acc['after']:.2%}",
                             highlight=False)
            stdout.print(f"wrote {output}", highlight=False)
