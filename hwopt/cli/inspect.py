"""``hwopt inspect``: op histogram, params, FLOPs, peak activation memory, and every site with the rules that apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hwopt.cli.app import app
from hwopt.cli.common import stdout, InputShapes, user_errors, input_shapes


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="ONNX model file"),
    input_shape: Optional[List[str]] = InputShapes,
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Op histogram, params, FLOPs, peak activation memory, and every site with the rules that apply."""
    with user_errors():
        from hwopt.canonical.canonicalize import load_canonical
        from hwopt.analysis.metrics import model_metrics
        from hwopt.report.tables import inspect_dict, print_inspect
        from hwopt.analysis.sites import Analysis

        _, canonical, canon = load_canonical(model, input_shapes(input_shape))
        analysis = Analysis(canonical)
        metrics = model_metrics(analysis.graph)
        if as_json:
            print(json.dumps(inspect_dict(analysis, metrics, canon), indent=2))
        else:
            print_inspect(stdout, analysis, metrics, canon)
