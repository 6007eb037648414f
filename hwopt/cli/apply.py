"""``hwopt apply``: apply rules in order, verify every step with onnxruntime, write the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hwopt.cli.app import app
from hwopt.cli.common import (stdout, stderr, ReportOption, InputShapes, Preprocessing, EvalSamples,
                              CalibrationOption, CalibrationSamples, Holdout, command_line, user_errors,
                              progress_bar)


@app.command()
def apply(
    model: Path = typer.Argument(..., help="ONNX model file (never modified)"),
    output: Path = typer.Option(..., "-o", "--output", help="where to write the rewritten model"),
    rule: Optional[List[str]] = typer.Option(None, "--rule", help="NAME[:k=v,...][@site,...] (repeatable, in order)"),
    rules_file: Optional[Path] = typer.Option(None, "--rules", help="a rule-set TOML file (applied before --rule)"),
    canonical_only: bool = typer.Option(False, "--canonical-only", help="no rules: write hwopt's canonical form "
                                        "(exact folds, e.g. a bias Add or BatchNorm into the conv before it), the "
                                        "form every hwopt figure is of"),
    input_shape: Optional[List[str]] = InputShapes,
    calibration: Optional[Path] = CalibrationOption,
    preprocess: Optional[str] = Preprocessing,
    calibration_samples: int = CalibrationSamples,
    eval_samples: Optional[int] = EvalSamples,
    holdout: float = Holdout,
    seed: int = typer.Option(0, "--seed", help="seed for random inputs and sampling"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on stdout"),
    report: Optional[Path] = ReportOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress, no tables"),
) -> None:
    """Apply rules in order, verify every step with onnxruntime, write the result."""
    with user_errors():
        from hwopt.api import apply as run_apply
        from hwopt.report.tables import print_apply

        with progress_bar(quiet or as_json) as progress:
            result = run_apply(model, rule or [], rules_file=rules_file, output=output, report=report,
                               input_shapes=input_shape or (), calibration=calibration, preprocess=preprocess,
                               calibration_samples=calibration_samples, eval_samples=eval_samples, holdout=holdout,
                               seed=seed, progress=progress, run={"command": command_line()},
                               canonical_only=canonical_only)
        if as_json:
            print(json.dumps({k: v for k, v in result.doc.items() if k != "model"}, indent=2))
        elif not quiet:
            print_apply(stdout, result.detail)
            stdout.print(f"wrote {output}")
        if not result.detail.exact and calibration is None and not quiet:
            # Measured on a trained MobileNetV2: weights refit on noise did not carry over to real images.
            stderr.print("hwopt: note: inexact rules were refit and verified on random inputs; give "
                         "--calibration FILE.npz with real samples for weights and figures that hold on real data",
                         markup=False, highlight=False)
