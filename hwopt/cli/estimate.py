"""``hwopt estimate``: predicted latency (per kernel and total), parameter and peak activation memory, off-chip traffic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hwopt.cli.app import app
from hwopt.cli.common import (stdout, TargetOption, ReportOption, InputShapes, command_line, user_errors)


@app.command()
def estimate(
    model: Path = typer.Argument(..., help="ONNX model file"),
    target: str = TargetOption,
    estimator: Optional[Path] = typer.Option(None, "--estimator", help="estimator folder (default: the target's)"),
    input_shape: Optional[List[str]] = InputShapes,
    allow_fallback: bool = typer.Option(False, "--allow-fallback",
                                        help="score unknown kernels by a roofline (flagged) instead of failing"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    report: Optional[Path] = ReportOption,
) -> None:
    """Predicted latency (per kernel and total), parameter and peak activation memory, off-chip traffic."""
    with user_errors():
        from hwopt.api import estimate as run_estimate
        from hwopt.report.estimate import print_estimate

        result = run_estimate(model, target, input_shapes=input_shape or (), estimator=estimator,
                              allow_fallback=allow_fallback, report=report, run={"command": command_line()})
        if as_json:
            print(json.dumps(result.doc, indent=2))
        else:
            print_estimate(stdout, result.detail, str(model), result.estimate_ms)
