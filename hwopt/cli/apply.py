"""``hwopt apply``: apply rules in order, verify every step with onnxruntime, write the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hwopt.errors import HwoptError

from hwopt.cli.app import app
from hwopt.cli.common import (stdout, stderr, ReportOption, InputShapes, Preprocessing, EvalSamples,
                              CalibrationOption, CalibrationSamples, Holdout, command_line, inputs_info,
                              user_errors, check_calibration, input_shapes, progress_bar)


@app.command()
def apply(
    model: Path = typer.Argument(..., help="ONNX model file (never modified)"),
    output: Path = typer.Option(..., "-o", "--output", help="where to write the rewritten model"),
    rule: Optional[List[str]] = typer.Option(None, "--rule", help="NAME[:k=v,...][@site,...] (repeatable, in order)"),
    rules_file: Optional[Path] = typer.Option(None, "--rules", help="a rule-set TOML file (applied before --rule)"),
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
        from hwopt.rewrites.apply import apply_steps
        from hwopt.canonical.canonicalize import load_canonical
        from hwopt.io.model import save_model
        from hwopt.report.tables import apply_dict, print_apply
        from hwopt.rewrites.ruleset import load_rule_file, parse_rule_option

        steps = (load_rule_file(rules_file) if rules_file else []) + [parse_rule_option(r) for r in rule or []]
        if not steps:
            raise HwoptError("no rules given: use --rule NAME[...] or --rules FILE (see 'hwopt rules')")
        from hwopt.io.outputs import check_outputs, model_files
        from hwopt.report.files import check_report_path, write_report

        protect = model_files(model) + ([calibration] if calibration else []) + ([rules_file] if rules_file else [])
        check_outputs({"-o": output, "--report": report}, protect)
        check_report_path(report, "apply")
        check_calibration(calibration, preprocess)
        original, canonical, _ = load_canonical(model, input_shapes(input_shape), seed=seed, for_writing=True)
        from hwopt.calibration.samples import calibration_sets

        calib, evaluation = calibration_sets(original, calibration, calibration_samples, eval_samples, seed,
                                             preprocess, holdout)
        with progress_bar(quiet or as_json) as progress:
            result = apply_steps(original, canonical, steps, calib, evaluation, seed=seed, progress=progress)
        save_model(result.model, output, protect=protect)
        source = str(calibration) if calibration else "random (standard normal)"
        if report:
            write_report(report, "apply", {"model": str(model), "output": str(output), "calibration": source,
                                           "run": {"command": command_line(), "inputs": inputs_info(
                                               calibration, calibration_samples, eval_samples)},
                                           **apply_dict(result)})
        if as_json:
            print(json.dumps({"output": str(output), "calibration": source, **apply_dict(result)}, indent=2))
        elif not quiet:
            print_apply(stdout, result)
            stdout.print(f"wrote {output}")
        if not result.exact and calibration is None and not quiet:
            # Measured on a trained MobileNetV2: weights refit on noise did not carry over to real images.
            stderr.print("hwopt: note: inexact rules were refit and verified on random inputs; give "
                         "--calibration FILE.npz with real samples for weights and figures that hold on real data",
                         markup=False, highlight=False)
