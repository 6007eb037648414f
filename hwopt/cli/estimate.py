"""``hwopt estimate``: predicted latency (per kernel and total), parameter and peak activation memory, off-chip traffic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hwopt.cli.app import app
from hwopt.cli.common import (stdout, TargetOption, ReportOption, InputShapes, command_line, user_errors,
                              input_shapes)


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
        import time

        from hwopt.canonical.canonicalize import load_canonical
        from hwopt.estimate import load_estimator
        from hwopt.report.estimate import print_estimate
        from hwopt.analysis.kernels import schedule
        from hwopt.report.files import check_report_path, write_report

        check_report_path(report, "estimate")
        est = load_estimator(target, estimator, allow_fallback=allow_fallback)
        _, canonical, _ = load_canonical(model, input_shapes(input_shape))
        start = time.perf_counter()  # after start-up and loading: what the search pays per model
        result = est.estimate(schedule(canonical, est.target.fusion))
        elapsed_ms = (time.perf_counter() - start) * 1000
        doc = {"model": str(model), "estimate_ms": elapsed_ms, **result.to_dict()}
        if report:
            from hwopt.report.provenance import estimator_provenance

            write_report(report, "estimate", {**doc, "run": {"command": command_line()},
                                              "provenance": estimator_provenance(est, result.fallbacks)})
        if as_json:
            print(json.dumps(doc, indent=2))
        else:
            print_estimate(stdout, result, str(model), elapsed_ms)
