"""``hwopt optimize``: search the rewrites for the fastest variant within budgets; write it, verified, with a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hwopt.errors import HwoptError

from hwopt.cli.app import app
from hwopt.cli.common import (stdout, stderr, TargetOption, ReportOption, InputShapes, Preprocessing,
                              EvalSamples, CalibrationOption, CalibrationSamples, Holdout, FidelityOption,
                              LabelsOption, LabelWeight,
                              command_line, random_inputs_note, ExecutorOption, JobsOption,
                              AddressOption, ResourceOption, executor_for, user_errors, progress_bar)


@app.command()
def optimize(
    models: List[Path] = typer.Argument(..., help="ONNX model file (never modified); several files or globs: "
                                        "each optimized, one report each and a summary"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="where to write the best variant "
                                          "(default: MODEL.hwopt.onnx next to the input; several models: "
                                          "a folder)"),
    target: str = TargetOption,
    rules_file: Optional[Path] = typer.Option(None, "--rules", help="rule set with a [search] table "
                                              "(default: rules/default.toml)"),
    strategy: str = typer.Option("auto", "--strategy", help="auto | exhaustive | evolutionary | greedy"),
    cost: str = typer.Option("auto", "--cost", help="auto (trained estimator if the target has one, else its "
                             "measurement backend) | estimator | backend"),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="params + peak activations, e.g. 4MiB"),
    max_latency: Optional[str] = typer.Option(None, "--max-latency", help="estimated latency, e.g. 2.5ms or 800us"),
    max_deviation: Optional[float] = typer.Option(None, "--max-deviation", min=0.0,
                                                  help="worst relative L2 output error vs the original "
                                                  "(held-out samples)"),
    fidelity: str = FidelityOption,
    min_fidelity: Optional[float] = typer.Option(None, "--min-fidelity", min=0.0, max=1.0,
                                                 help="the written model keeps at least this task fidelity on the "
                                                 "held-out samples (default: top1/top5/argmax 0.99, cosine 0.999, "
                                                 "rel-l2 0.95); an inexact model must meet it with the 95% lower "
                                                 "confidence bound over independent held-out samples (99% with no "
                                                 "miss needs 299 of them), else only exact rewrites are taken"),
    for_retraining: bool = typer.Option(False, "--for-retraining", help="no fidelity budget: the fastest "
                                        "architecture, its weights only an initialisation for training"),
    verify_front: int = typer.Option(0, "--verify-front", min=0, help="also materialise and verify up to N rows "
                                     "of the latency / fidelity front"),
    fidelity_model: str = typer.Option("log", "--fidelity-model", help="how decisions' costs combine: log "
                                       "(additive in log-fidelity) | linear (additive in infidelity)"),
    min_gain: float = typer.Option(0.01, "--min-gain", min=0.0, max=0.99, help="what a rewrite must buy, as a share "
                                   "of the original's latency (0.01: 1%): an inexact decision is kept only when its "
                                   "estimated gain reaches it and exceeds the estimator's band; a written model only "
                                   "when its gain does (on cpu: a paired A/B measurement, interval excluding no "
                                   "change); else nothing is written (exit 0, 'no worthwhile gain')"),
    exact_only: bool = typer.Option(False, "--exact-only", help="function-preserving rewrites only"),
    finalists: int = typer.Option(3, "--finalists", min=1, help="variants materialised and verified per search "
                                  "round (fidelity budget)"),
    save_rules: Optional[Path] = typer.Option(None, "--save-rules", help="write the chosen decisions as a rule set"),
    report: Optional[Path] = ReportOption,
    node_data: Optional[Path] = typer.Option(None, "--node-data", help="write per-node latency, traffic and rule "
                                             "overlays for Model Explorer: FILE.{original,rewritten}.*.json"),
    pick: Optional[str] = typer.Option(None, "--pick", help="write this point of an earlier report's fronts "
                                       "instead (an id like p3; same model, rules, target, budgets and --seed)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON (schema hwopt.optimize/2)"),
    measure: bool = typer.Option(False, "--measure", help="also measure each compared variant on the target"),
    measure_finalists: Optional[bool] = typer.Option(None, "--measure-finalists/--no-measure-finalists",
                                                     help="time every finalist on the target and keep the fastest "
                                                     "measured (default: on cpu, where measuring is local and cheap)"),
    recover: bool = typer.Option(False, "--recover", help="distil the fastest finalists from the original on the "
                                 "calibration samples (hwopt recover; needs hwopt[recover]) and keep the fastest "
                                 "that meets the budgets after"),
    recover_time: Optional[str] = typer.Option(None, "--recover-time", help="--recover: time budget shared by the "
                                               "recovered finalists (default 10m; with --recover-epochs: a cap)"),
    recover_epochs: Optional[int] = typer.Option(None, "--recover-epochs", min=1, help="--recover: epochs per "
                                                 "finalist (deterministic on CPU)"),
    recover_finalists: int = typer.Option(2, "--recover-finalists", min=1, help="--recover: how many of the "
                                          "fastest finalists are recovered"),
    recover_reach: float = typer.Option(0.1, "--recover-reach", min=0.0, max=1.0, help="--recover: also recover "
                                        "the fastest variant predicted within --min-fidelity minus this (0: none)"),
    labels: str = LabelsOption,
    label_weight: float = LabelWeight,
    max_accuracy_drop: float = typer.Option(0.01, "--max-accuracy-drop", min=0.0, max=1.0, help="--recover with "
                                            "labels: a recovered model's held-out accuracy may be at most this "
                                            "below the original's (replaces the agreement budget for it)"),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="materialise each rule-alone row too "
                                 "(its output deviation and measured latency; --no-compare: estimates only)"),
    input_shape: Optional[List[str]] = InputShapes,
    calibration: Optional[Path] = CalibrationOption,
    preprocess: Optional[str] = Preprocessing,
    calibration_samples: int = CalibrationSamples,
    eval_samples: Optional[int] = EvalSamples,
    holdout: float = Holdout,
    seed: int = typer.Option(0, "--seed", help="seed of the search, random inputs and sampling"),
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="estimator cost: score kernels it was "
                                        "never trained on by a roofline (flagged) instead of failing"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress, no summary"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print every table (side by side, fronts, "
                                 "per block, decisions) after the summary; the report has them too"),
    executor: str = ExecutorOption,
    jobs: int = JobsOption,
    address: Optional[str] = AddressOption,
    resource: Optional[List[str]] = ResourceOption,
) -> None:
    """Search the rewrites for the fastest variant within budgets; write it, verified, with a report.

    Exit 0: a model was written within the budgets; 1: no variant meets them (stderr says which budget
    failed by how much); 2: bad input. Several models: the worst of theirs.
    """
    with user_errors():
        from hwopt.executors.batch import expand_models
        from hwopt.recover.budget import parse_duration
        from hwopt.request import OptimizeRequest, Recovery

        paths = expand_models(models)
        recovery = None
        if recover:
            seconds = parse_duration(recover_time or "10m") if recover_epochs is None or recover_time else None
            recovery = Recovery(seconds, recover_epochs, recover_finalists, reach=recover_reach, labels=labels,
                                label_weight=label_weight, max_accuracy_drop=max_accuracy_drop)
        elif recover_time or recover_epochs:
            raise HwoptError("--recover-time and --recover-epochs need --recover")
        request = OptimizeRequest(
            target=target, max_memory=max_memory, max_latency=max_latency, max_deviation=max_deviation,
            fidelity=fidelity, min_fidelity=min_fidelity, for_retraining=for_retraining,
            fidelity_model=fidelity_model, min_gain=min_gain, rules=rules_file, exact_only=exact_only, strategy=strategy, cost=cost,
            allow_fallback=allow_fallback, finalists=finalists, verify_front=verify_front, compare=compare,
            measure=measure, measure_finalists=measure_finalists, pick=pick, seed=seed,
            input_shapes=tuple(input_shape or ()), calibration=calibration, preprocess=preprocess,
            calibration_samples=calibration_samples, eval_samples=eval_samples, holdout=holdout, recover=recovery)
        if len(paths) > 1:
            if pick is not None or node_data is not None or recover:
                raise HwoptError("--pick, --node-data and --recover are for one model at a time")
            request.check_inputs()
            from hwopt.cli.batch import optimize_many

            raise typer.Exit(optimize_many(paths, request, output, report, save_rules, as_json, quiet,
                                           executor_for(executor, jobs, address, resource), stdout, stderr,
                                           {"command": command_line()}, verbose=verbose))
        from hwopt.api import optimize as run_optimize
        from hwopt.report.optimize import print_report

        model = paths[0]
        output = output or model.with_name(model.name.removesuffix(".onnx") + ".hwopt.onnx")
        with progress_bar(quiet) as progress:
            result = run_optimize(model, request, output=output, report=report, save_rules=save_rules,
                                  node_data=node_data, progress=progress, run={"command": command_line()})
        doc = result.doc
        if as_json:
            print(json.dumps(doc, indent=2))
        elif not quiet:
            print_report(stdout, doc, verbose=verbose, report=report)
        fid = doc.get("fidelity") or {}
        for key in ("independence_warning", "unprovable"):
            if fid.get(key):
                stderr.print(f"hwopt: note: {fid[key]}", markup=False, highlight=False)
        for line in doc.get("nothing_to_do", []):
            stderr.print(f"hwopt: nothing to do: {line}", markup=False, highlight=False)
        if result.ok and doc.get("output") is None:
            left = f" ({output} exists from an earlier run and was left as it is)" if output.exists() else ""
            stderr.print(f"hwopt: note: nothing written: the original {model} is the model to deploy{left}",
                         markup=False, highlight=False)
            folds = [n for n in doc.get("canonicalization_notes") or [] if n.startswith("folded")]
            if folds:  # every figure is of the canonical form: the user's converter may not fold these
                stderr.print(f"hwopt: note: the figures are of hwopt's canonical form, which {'; '.join(folds)} "
                             f"(exact): if your converter does not fold them, deploy that form: hwopt apply {model} "
                             f"--canonical-only -o OUT.onnx", markup=False, highlight=False)
        if calibration is None and not exact_only:
            random_inputs_note(quiet)
        if not result.ok:
            for line in doc["failure"]:
                stderr.print(f"hwopt: {line}", markup=False, highlight=False)
            raise typer.Exit(1)
