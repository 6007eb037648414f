"""``hwopt optimize``: search the rewrites for the fastest variant within budgets; write it, verified, with a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hwopt.errors import HwoptError

from hwopt.cli.app import app
from hwopt.cli.measure import measured_kernels
from hwopt.cli.common import (stdout, stderr, TargetOption, ReportOption, InputShapes, Preprocessing,
                              EvalSamples, CalibrationOption, CalibrationSamples, Holdout, FidelityOption,
                              command_line, inputs_info, random_inputs_note, ExecutorOption, JobsOption,
                              AddressOption, ResourceOption, executor_for, user_errors, check_calibration,
                              input_shapes, progress_bar)


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
                                                 "rel-l2 0.95)"),
    for_retraining: bool = typer.Option(False, "--for-retraining", help="no fidelity budget: the fastest "
                                        "architecture, its weights only an initialisation for training"),
    verify_front: int = typer.Option(0, "--verify-front", min=0, help="also materialise and verify up to N rows "
                                     "of the latency / fidelity front"),
    fidelity_model: str = typer.Option("log", "--fidelity-model", help="how decisions' costs combine: log "
                                       "(additive in log-fidelity) | linear (additive in infidelity)"),
    exact_only: bool = typer.Option(False, "--exact-only", help="function-preserving rewrites only"),
    finalists: int = typer.Option(3, "--finalists", min=1, help="variants materialised and verified per search "
                                  "round (fidelity budget)"),
    save_rules: Optional[Path] = typer.Option(None, "--save-rules", help="write the chosen decisions as a rule set"),
    report: Optional[Path] = ReportOption,
    node_data: Optional[Path] = typer.Option(None, "--node-data", help="write per-node latency, traffic and rule "
                                             "overlays for Model Explorer: FILE.{original,rewritten}.*.json"),
    pick: Optional[str] = typer.Option(None, "--pick", help="write this Pareto point of an earlier report "
                                       "instead (an id like p3; same model, rules, target and --seed)"),
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress, no tables"),
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

        paths = expand_models(models)
        from hwopt.fidelity.metrics import METRICS
        from hwopt.search.sensitivity import FidelityModel

        if fidelity != "auto" and fidelity not in METRICS:
            raise HwoptError(f"--fidelity {fidelity!r}: metrics are auto, {', '.join(METRICS)}")
        if fidelity_model not in FidelityModel.MODES:
            raise HwoptError(f"--fidelity-model {fidelity_model!r}: one of {', '.join(FidelityModel.MODES)}")
        if for_retraining and min_fidelity is not None:
            raise HwoptError("--for-retraining asks for no fidelity budget: drop --min-fidelity (or keep the budget)")
        if holdout <= 0:
            raise HwoptError(f"--holdout {holdout}: a fraction in (0, 1) or a sample count >= 1")
        from hwopt.search.objective import Budgets, parse_bytes, parse_latency

        budgets = Budgets(parse_bytes(max_memory) if max_memory else None,
                          parse_latency(max_latency) if max_latency else None, max_deviation)
        if len(paths) > 1:
            if pick is not None or node_data is not None or recover:
                raise HwoptError("--pick, --node-data and --recover are for one model at a time")
            check_calibration(calibration, preprocess)
            options = dict(target=target, rules_path=rules_file, input_shapes=input_shapes(input_shape), budgets=budgets,
                           strategy=strategy, cost=cost, exact_only=exact_only, seed=seed, finalists=finalists,
                           compare=compare, calibration=calibration, calibration_samples=calibration_samples,
                           eval_samples=eval_samples, measure=measure, preprocess=preprocess, holdout=holdout,
                           fidelity=fidelity, min_fidelity=min_fidelity, for_retraining=for_retraining,
                           fidelity_model=fidelity_model, verify_front=verify_front,
                           allow_fallback=allow_fallback, measure_finalists=measure_finalists,
                           run={"command": command_line(), "pick": None,
                                "inputs": inputs_info(calibration, calibration_samples, eval_samples)})
            from hwopt.cli.batch import optimize_many

            raise typer.Exit(optimize_many(paths, options, output, report, save_rules, as_json, quiet,
                                           executor_for(executor, jobs, address, resource), stdout, stderr))
        model = paths[0]
        recovery = None
        if recover:
            from hwopt.recover import require_torch
            from hwopt.recover.budget import parse_duration
            from hwopt.search.recovery import RecoveryOptions

            require_torch()  # before any work: one line naming the extra
            seconds = parse_duration(recover_time or "10m") if recover_epochs is None or recover_time else None
            recovery = RecoveryOptions(seconds, recover_epochs, recover_finalists, reach=recover_reach)
        elif recover_time or recover_epochs:
            raise HwoptError("--recover-time and --recover-epochs need --recover")
        from hwopt.io.model import save_model
        from hwopt.search.optimize import optimize as run_optimize
        from hwopt.report.optimize import print_report, to_dict
        from hwopt.search.rulefile import rules_header, write_rules

        if not model.is_file():
            raise HwoptError(f"{model}: no such file")
        output = output or model.with_name(model.name.removesuffix(".onnx") + ".hwopt.onnx")
        from hwopt.io.outputs import check_outputs, model_files
        from hwopt.report.files import check_report_path, write_report

        protect = model_files(model) + [p for p in (calibration, rules_file) if p]
        overlays = {}
        if node_data is not None:
            from hwopt.report.node_data import paths as node_data_paths

            if node_data.suffix.lower() != ".json":
                raise HwoptError(f"--node-data {node_data}: give a .json file name (FILE.json writes "
                                 f"FILE.original.latency.json and its siblings)")
            overlays = {f"--node-data ({p.name})": p for g in ("original", "rewritten")
                        for p in node_data_paths(node_data, g).values()}
        check_outputs({"-o": output, "--report": report, "--save-rules": save_rules, **overlays}, protect)
        check_report_path(report, "optimize")
        if pick is not None and not (pick[:1] == "p" and pick[1:].isdigit()):
            raise HwoptError(f"--pick {pick!r}: a Pareto id from a report, like p3")
        from functools import partial

        from hwopt.calibration.samples import calibration_split

        check_calibration(calibration, preprocess)
        inputs = partial(calibration_split, path=calibration, count=calibration_samples, eval_count=eval_samples,
                         seed=seed, preprocess=preprocess, holdout=holdout)
        with progress_bar(quiet) as progress:
            result, best_model = run_optimize(
                model, target_name=target, rules_path=rules_file, input_shapes=input_shapes(input_shape),
                budgets=budgets, strategy=strategy, cost=cost, exact_only=exact_only, seed=seed,
                finalists=finalists, compare_rules=compare, calibration_sets=inputs, measure=measure,
                measure_finalists=measure_finalists, recover=recovery,
                progress=progress, pick=pick, allow_fallback=allow_fallback, fidelity=fidelity,
                min_fidelity=min_fidelity, for_retraining=for_retraining, fidelity_model=fidelity_model,
                verify_front=verify_front,
            )
        if best_model is not None:
            save_model(best_model, output, protect=protect)
            if save_rules:
                write_rules(save_rules, result.best.steps, rules_header(
                    model, result.target.name, seed, save_rules, calibration_samples, eval_samples, calibration,
                    preprocess, result.best.steps, holdout=holdout, for_retraining=for_retraining))
        run = {"command": command_line(), "inputs": inputs_info(calibration, calibration_samples, eval_samples),
               "pick": pick}
        doc = to_dict(result, output, save_rules, seed, run)
        if node_data is not None and best_model is not None:
            from hwopt.estimate import load_estimator
            from hwopt.io.model import apply_input_shapes, load_model
            from hwopt.report.node_data import site_rules
            from hwopt.report.node_data import write as write_node_data

            rules_at = site_rules(result)
            written = {n.name for n in best_model.graph.node}
            rewritten_rules = {n: r for n, r in rules_at.items() if n in written}
            canonical_names = {m.name for m in result.vm.analysis.model.graph.node}
            rewritten_rules.update({n: "new" for n in written if n not in canonical_names})
            original = load_model(model)
            apply_input_shapes(original, input_shapes(input_shape))
            doc["node_data"] = [str(p) for p in write_node_data(node_data, [
                ("original", original, rules_at),
                ("rewritten", best_model, rewritten_rules)], load_estimator(result.target, allow_fallback=True))]
        if measure and best_model is not None and report is not None:
            measured_kernels(doc, result.target, best_model)
        if report:
            write_report(report, "optimize", doc)
        if as_json:
            print(json.dumps(doc, indent=2))
        elif not quiet:
            print_report(stdout, doc)
            if best_model is not None:
                stdout.print(f"wrote {output}" + (f" and {save_rules}" if save_rules else ""), highlight=False)
        for line in doc.get("nothing_to_do", []):
            stderr.print(f"hwopt: nothing to do: {line}", markup=False, highlight=False)
        if doc.get("nothing_to_do") and best_model is not None:
            stderr.print(f"hwopt: note: {output} is the original in canonical form (no rewrite helps)",
                         markup=False, highlight=False)
        if calibration is None and not exact_only:
            random_inputs_note(quiet)
        if best_model is None:
            for line in result.failure:
                stderr.print(f"hwopt: {line}", markup=False, highlight=False)
            raise typer.Exit(1)
