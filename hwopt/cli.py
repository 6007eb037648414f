"""The ``hwopt`` command line (typer).

Exit codes: 0 success; 2 bad input or an impossible request (one line on
stderr, input files never written); 3 an internal error (one line; set
HWOPT_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.console import Console

from hwopt.errors import HwoptError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Make ONNX vision models fast on neural accelerators with curated, verified rewrites.")

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

# One default target for every command: the accelerator hwopt is for (cpu is one -t away).
DEFAULT_TARGET = "npu32"
TargetOption = typer.Option(DEFAULT_TARGET, "--target", "-t", help="shipped target name or target TOML path")
ReportOption = typer.Option(None, "--report", help="write a report; the extension picks the format: "
                            ".html (self-contained, with plots), .json (and .md for optimize)")
InputShapes = typer.Option(None, "--input-shape", help="fix an input's shape: NAME=1x3x224x224 (repeatable)")
Preprocessing = typer.Option(None, "--preprocess", help="for a --calibration folder: imagenet (default) | 0-1 | "
                             "0-255, plus bgr and/or nhwc|nchw, comma-separated (e.g. imagenet,bgr)")
EvalSamples = typer.Option(None, "--eval-samples", min=1, help="at most this many held-out samples judge the "
                           "result (default: all held out; without --calibration: 16 random ones)")
CalibrationOption = typer.Option(None, "--calibration", help=".npz with arrays named after the inputs, or a "
                                 "folder of JPEG/PNG photos (see --preprocess)")
CalibrationSamples = typer.Option(64, "--calibration-samples", min=1, help="samples used for refits")
Holdout = typer.Option(0.25, "--holdout", help="calibration samples held out, never fitted on, to judge fidelity: "
                       "a fraction below 1 or a count (whole groups when the .npz has a '_group' array)")
FidelityOption = typer.Option("auto", "--fidelity", help="task fidelity metric: auto | top1 | top5 | argmax | "
                              "cosine | rel-l2 (auto: top1 for one [N, C] output, argmax for a class map, else cosine)")


def _version(value: bool) -> None:
    if value:
        from hwopt import __version__

        print(f"hwopt {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Make ONNX vision models fast on neural accelerators with curated, verified rewrites."""


def command_line() -> str:
    """The command as typed (for report headers)."""
    import shlex

    return "hwopt " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def inputs_info(calibration: Optional[Path], calibration_samples: int, eval_samples: int) -> dict:
    return {"calibration": str(calibration) if calibration else "random (standard normal)",
            "random": calibration is None, "calibration_samples": calibration_samples, "eval_samples": eval_samples}


def random_inputs_note(quiet: bool) -> None:
    if not quiet:
        stderr.print("hwopt: note: no --calibration: refits and deviations use RANDOM standard-normal inputs, not "
                     "real samples (give --calibration FILE.npz for figures that hold on real data)",
                     markup=False, highlight=False)
ExecutorOption = typer.Option("local", "--executor", help="local (this machine; --jobs processes) | ray (a Ray "
                              "cluster: pip install 'hwopt[ray]')")
JobsOption = typer.Option(1, "--jobs", "-j", min=1, help="local executor: processes at once (ray without "
                          "--address: CPUs of the private cluster)")
AddressOption = typer.Option(None, "--address", help="ray executor: the cluster (HOST:PORT of its head, or 'auto' "
                             "for the one this machine joined); none: a private one-machine cluster")
ResourceOption = typer.Option(None, "--resource", help="ray executor: each task also takes one unit of this "
                              "custom Ray resource (a device kind of a device farm; repeatable)")


def _executor(name: str, jobs: int, address: Optional[str], resources: Optional[List[str]]):
    from hwopt.executors import get_executor

    if name != "ray" and (address or resources):
        raise HwoptError("--address and --resource are for --executor ray")
    return get_executor(name, jobs=jobs, address=address, resources={r: 1.0 for r in resources or []})


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input: one line and exit 2. Anything else: one line and exit 3 (traceback on demand).
    Warnings (``hwopt.errors.warn``): one line each, the command goes on."""
    import warnings

    from hwopt.errors import HwoptWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", HwoptWarning)
            warnings.showwarning = _show_warning  # also in-process (tests, embedding), not only via main()
            yield
    except HwoptError as exc:
        stderr.print(f"hwopt: error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI must never print a bare traceback
        if os.environ.get("HWOPT_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        stderr.print(f"hwopt: internal error: {type(exc).__name__}: {message} (set HWOPT_DEBUG=1 for details)",
                     markup=False, highlight=False)
        raise typer.Exit(3) from None


def _check_calibration(path: Optional[Path], preprocess: Optional[str]) -> None:
    """Before any long work: a calibration folder has a readable image, --preprocess is known and used."""
    folder = path is not None and path.is_dir()
    if preprocess is not None and not folder:
        raise HwoptError("--preprocess applies to a --calibration folder of images (an .npz is used as it is)")
    if folder:
        from hwopt.images import Preprocess, scan_image_folder

        Preprocess.parse(preprocess)
        scan_image_folder(path)


def _shapes(values: Optional[List[str]]):
    from hwopt.modelio import InputShape

    return [InputShape.parse(v) for v in values or []]


@contextmanager
def progress_bar(quiet: bool):
    """Progress on stderr (hwopt.progress): live bars on a terminal, a line per stage in a log."""
    from hwopt.progress import progress_bar as bars

    with bars(stderr, quiet) as callback:
        yield callback


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="ONNX model file"),
    input_shape: Optional[List[str]] = InputShapes,
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Op histogram, params, FLOPs, peak activation memory, and every site with the rules that apply."""
    with user_errors():
        from hwopt.canonicalize import load_canonical
        from hwopt.metrics import model_metrics
        from hwopt.report import inspect_dict, print_inspect
        from hwopt.sites import Analysis

        _, canonical, canon = load_canonical(model, _shapes(input_shape))
        analysis = Analysis(canonical)
        metrics = model_metrics(analysis.graph)
        if as_json:
            print(json.dumps(inspect_dict(analysis, metrics, canon), indent=2))
        else:
            print_inspect(stdout, analysis, metrics, canon)


@app.command()
def rules() -> None:
    """The rewrite rules: what they do, their parameters, whether they are exact."""
    with user_errors():
        from hwopt.report import print_rules

        print_rules(stdout)


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
        from hwopt.apply import apply_steps
        from hwopt.canonicalize import load_canonical
        from hwopt.modelio import save_model
        from hwopt.report import apply_dict, print_apply
        from hwopt.ruleset import load_rule_file, parse_rule_option

        steps = (load_rule_file(rules_file) if rules_file else []) + [parse_rule_option(r) for r in rule or []]
        if not steps:
            raise HwoptError("no rules given: use --rule NAME[...] or --rules FILE (see 'hwopt rules')")
        from hwopt.outputs import check_outputs, model_files
        from hwopt.report_files import check_report_path, write_report

        protect = model_files(model) + ([calibration] if calibration else []) + ([rules_file] if rules_file else [])
        check_outputs({"-o": output, "--report": report}, protect)
        check_report_path(report, "apply")
        _check_calibration(calibration, preprocess)
        original, canonical, _ = load_canonical(model, _shapes(input_shape), seed=seed, for_writing=True)
        from hwopt.calibration import calibration_sets

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


@app.command()
def targets() -> None:
    """The shipped targets: parallelism P, dtype, measurement backend."""
    with user_errors():
        from rich.table import Table

        from hwopt.targets import load_target, shipped_targets

        table = Table("target", "P", "dtype", "backend", "description")
        for name in shipped_targets():
            t = load_target(name)
            table.add_row(t.name, str(t.parallelism), t.dtype, t.backend, t.description)
        stdout.print(table)


@app.command()
def profile(
    source: Optional[Path] = typer.Argument(None, help="with --backend table: the CSV of measurements to import"),
    target: str = TargetOption,
    from_models: Optional[List[Path]] = typer.Option(None, "--from", help="also sample kernels from this model (repeatable)"),
    examples: bool = typer.Option(True, "--examples/--no-examples", help="sample kernels from the example models"),
    count: Optional[int] = typer.Option(None, "--count", min=1, help="measure at most N kernels of the sweep"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="measurements table (required for a "
                                          "shipped target; default: beside your target file)"),
    backend: Optional[str] = typer.Option(None, "--backend", help="'table' imports SOURCE instead of measuring"),
    seed: int = typer.Option(0, "--seed", help="seed of the sweep's sampling"),
    kinds: Optional[List[str]] = typer.Option(None, "--kind", help="only kernels of this kind, e.g. act "
                                              "(repeatable; applied before --count)"),
    decisions: bool = typer.Option(False, "--decisions", help="instead of the sweep: the kernels the search's "
                                   "single-site options write on the models (smallest first)"),
    input_shape: Optional[List[str]] = InputShapes,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress"),
    executor: str = ExecutorOption,
    jobs: int = JobsOption,
    address: Optional[str] = AddressOption,
    resource: Optional[List[str]] = ResourceOption,
    order: str = typer.Option("sweep", "--order", help="sweep (the sweep's interleaved mix) | largest-first "
                              "(the most expensive kernels first: a run stopped early has the extremes) | "
                              "coarse-to-fine (the largest, then the size range bisected: any prefix spans it)"),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="kernels per task (default: about four "
                                        "tasks per worker, at most 32)"),
    skip: Optional[List[Path]] = typer.Option(None, "--skip", help="kernels already in this table are not measured "
                                              "(repeatable: extend a table into a separate file)"),
) -> None:
    """Measure the kernel sweep on a target (resumable), or import a table measured elsewhere."""
    with user_errors():
        from hwopt.targets import load_target

        t = load_target(target)
        default_out = t.folder / "measurements.csv.gz"
        if output is None and t.shipped:
            # The shipped target's folder belongs to the installation; a table is data to keep, not a cache.
            raise HwoptError(f"give -o TABLE.csv.gz: hwopt does not write into the shipped {t.name} target's "
                             f"folder ({t.folder}); a table without -o goes beside a target file of your own")
        if backend == "table":
            from hwopt.backends.table import import_table

            if source is None:
                raise HwoptError("--backend table needs the CSV to import: hwopt profile --backend table FILE")
            rows = import_table(source, output or default_out)
            stdout.print(f"imported {len(rows)} kernel measurements from {source} into {output or default_out}")
            return
        if backend is not None:
            raise HwoptError(f"--backend {backend!r}: only 'table' can be chosen (the target names its own backend)")
        if source is not None:
            raise HwoptError(f"unexpected argument {source}: a table to import needs --backend table")
        from hwopt.backends import get_backend
        from hwopt.canonicalize import load_canonical
        from hwopt.executors.progress import rate_progress
        from hwopt.profile import ORDERS, profile_with, sweep

        if order not in ORDERS:
            raise HwoptError(f"--order {order!r}: choose one of {', '.join(ORDERS)}")
        get_backend(t)  # first: a missing backend is the first thing to say
        models = [load_canonical(m, _shapes(input_shape))[1] for m in from_models or []]
        if decisions:
            from hwopt.profile import _example_canonicals
            from hwopt.search.decisions import decision_kernels

            sources = (list(_example_canonicals()) if examples else []) + models
            kernels = list(dict.fromkeys(k for m in sources for k in decision_kernels(m, t)))
        else:
            kernels = sweep(t.parallelism, models, examples=examples, seed=seed)
        if kinds:
            from hwopt.kernels import KINDS

            unknown = sorted(set(kinds) - set(KINDS))
            if unknown:
                raise HwoptError(f"--kind {unknown[0]!r}: kernel kinds are {', '.join(KINDS)}")
            kernels = [k for k in kernels if k.kind in kinds]
        if skip:
            from hwopt.backends.base import read_table

            known = {m.kernel for table in skip for m in read_table(table)}
            kernels = [k for k in kernels if k not in known]
        kernels = ORDERS[order](kernels[:count] if count is not None else kernels, t)
        runner = _executor(executor, jobs, address, resource)
        try:
            with rate_progress(stderr, quiet) as progress:
                result = profile_with(runner, t, kernels, output or default_out, progress,
                                      label=f"profiling {t.name}", batch=batch)
        finally:
            runner.close()
        if not quiet:
            stdout.print(f"{result.measured} kernels measured, {result.skipped} already in the table; "
                         f"{result.total} rows in {result.output}")
        for kernel, message in result.failed[:5]:
            stderr.print(f"hwopt: not measured: {kernel.describe()}: {message}", markup=False, highlight=False)
        if result.failed:
            raise HwoptError(f"{len(result.failed)} kernel(s) could not be measured (listed above); the rest are saved")


@app.command()
def measure(
    models: List[Path] = typer.Argument(..., help="ONNX model file; several files or globs: each measured, "
                                        "then a summary"),
    target: str = TargetOption,
    input_shape: Optional[List[str]] = InputShapes,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    as_given: bool = typer.Option(False, "--as-given", help="onnxruntime targets: time the file as given, not "
                                  "its canonical form (the form hwopt estimates and writes)"),
    report: Optional[Path] = ReportOption,
    executor: str = ExecutorOption,
    jobs: int = JobsOption,
    address: Optional[str] = AddressOption,
    resource: Optional[List[str]] = ResourceOption,
) -> None:
    """The whole model's latency on a target (cpu: timed end to end with onnxruntime, canonical form)."""
    with user_errors():
        from hwopt.batch import expand_models

        paths = expand_models(models)
        if len(paths) > 1:
            from hwopt.batch_cli import measure_many

            if report is not None:
                raise HwoptError("--report is for one model at a time (several models: --json)")

            raise typer.Exit(measure_many(paths, target, _shapes(input_shape), as_given, as_json,
                                          _executor(executor, jobs, address, resource), stdout, stderr))
        model = paths[0]
        from hwopt.backends import model_measurer
        from hwopt.canonicalize import check_input_dims
        from hwopt.modelio import apply_input_shapes, load_model
        from hwopt.targets import load_target

        from hwopt.report_files import check_report_path, write_report

        check_report_path(report, "measure")
        t = load_target(target)
        measurer = model_measurer(t)  # before loading: a missing backend is the first thing to say
        proto = load_model(model)
        apply_input_shapes(proto, _shapes(input_shape))
        check_input_dims(proto)
        if as_given and t.backend != "onnxruntime":
            raise HwoptError(f"--as-given is for onnxruntime targets; {t.name} always measures the canonical kernels")
        result = measurer(proto if input_shape else model, t, **({"as_given": True} if as_given else {}))
        latency = float(getattr(result, "latency_us", result))
        meta = dict(getattr(result, "meta", {}) or {})
        if report:
            write_report(report, "measure", _measure_doc(model, proto, t, latency, result, meta))
        if as_json:
            print(json.dumps({"model": str(model), "target": t.name, "latency_us": latency,
                              "backend": getattr(result, "backend", t.backend), "meta": meta}, indent=2))
            return
        detail = (f" ({meta.get('form', 'canonical')} form, mean of {meta.get('sessions', 1)} session medians, "
                  f"{meta['repeats']} runs, {meta.get('threads', '?')} thread(s))" if "repeats" in meta else "")
        if meta.get("reorders"):
            detail += (f"; of which {meta['reorders']} layout conversions (NCHWc reorders): "
                       f"{meta['reorder_us'] / 1000:.3f} ms, profiled")
        stdout.print(f"{model} on {t.name}: {latency / 1000:.3f} ms{detail}")


def _measured_kernels(doc: dict, target, model) -> None:
    """optimize --measure: the written model's estimate against its measurement, kernel by kernel, where the
    target's backend measures kernels (npu32: emulated, from the disk cache the --measure run filled)."""
    from hwopt.backends import model_measurer
    from hwopt.estimate import load_estimator
    from hwopt.provenance import per_kernel

    pairs = list(getattr(model_measurer(target)(model, target), "kernels", None) or [])
    provenance = doc.setdefault("provenance", {})
    if pairs:
        provenance["per_kernel"] = per_kernel(load_estimator(target, allow_fallback=True), pairs)
        provenance["measured_by"] = f"{target.backend}, the written model kernel by kernel"
    else:
        provenance["note"] = f"{target.name} measures whole models end to end: no per-kernel comparison"


def _measure_doc(model: Path, proto, target, latency: float, result, meta: dict) -> dict:
    """The measure report: the measurement, the estimate beside it, per kernel where the backend measured kernels."""
    doc = {"model": str(model), "target": target.name, "latency_us": latency,
           "backend": getattr(result, "backend", target.backend), "meta": meta,
           "run": {"command": command_line()}, "estimated_us": None}
    try:
        from hwopt.estimate import load_estimator
    except ImportError:
        return doc
    try:
        est = load_estimator(target, allow_fallback=True)
    except HwoptError as exc:
        doc["provenance"] = {"cost_model": "none", "note": str(exc)}
        return doc
    from hwopt.canonicalize import canonicalize
    from hwopt.provenance import estimator_provenance, per_kernel

    canonical, _ = canonicalize(proto, verify=False)
    estimate = est.estimate(est.schedule_of(canonical))
    doc["estimated_us"] = estimate.latency_us
    doc["provenance"] = estimator_provenance(est, estimate.fallbacks)
    pairs = list(getattr(result, "kernels", None) or [])
    if pairs:
        doc["provenance"]["per_kernel"] = per_kernel(est, pairs)
        doc["provenance"]["measured_by"] = f"{doc['backend']}, kernel by kernel"
    else:
        doc["provenance"]["note"] = (f"{target.name} measures the whole model end to end: no per-kernel "
                                     f"measurement here (hwopt profile measures kernels one by one)")
    return doc


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
        from hwopt.batch import expand_models

        paths = expand_models(models)
        from hwopt.fidelity import METRICS
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
            _check_calibration(calibration, preprocess)
            options = dict(target=target, rules_path=rules_file, input_shapes=_shapes(input_shape), budgets=budgets,
                           strategy=strategy, cost=cost, exact_only=exact_only, seed=seed, finalists=finalists,
                           compare=compare, calibration=calibration, calibration_samples=calibration_samples,
                           eval_samples=eval_samples, measure=measure, preprocess=preprocess, holdout=holdout,
                           fidelity=fidelity, min_fidelity=min_fidelity, for_retraining=for_retraining,
                           fidelity_model=fidelity_model, verify_front=verify_front,
                           allow_fallback=allow_fallback, measure_finalists=measure_finalists,
                           run={"command": command_line(), "pick": None,
                                "inputs": inputs_info(calibration, calibration_samples, eval_samples)})
            from hwopt.batch_cli import optimize_many

            raise typer.Exit(optimize_many(paths, options, output, report, save_rules, as_json, quiet,
                                           _executor(executor, jobs, address, resource), stdout, stderr))
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
        from hwopt.modelio import save_model
        from hwopt.search.optimize import optimize as run_optimize
        from hwopt.search.report import print_report, to_dict
        from hwopt.search.rulefile import rules_header, write_rules

        if not model.is_file():
            raise HwoptError(f"{model}: no such file")
        output = output or model.with_name(model.name.removesuffix(".onnx") + ".hwopt.onnx")
        from hwopt.outputs import check_outputs, model_files
        from hwopt.report_files import check_report_path, write_report

        protect = model_files(model) + [p for p in (calibration, rules_file) if p]
        overlays = {}
        if node_data is not None:
            from hwopt.node_data import paths as node_data_paths

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

        from hwopt.calibration import calibration_split

        _check_calibration(calibration, preprocess)
        inputs = partial(calibration_split, path=calibration, count=calibration_samples, eval_count=eval_samples,
                         seed=seed, preprocess=preprocess, holdout=holdout)
        with progress_bar(quiet) as progress:
            result, best_model = run_optimize(
                model, target_name=target, rules_path=rules_file, input_shapes=_shapes(input_shape),
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
            from hwopt.modelio import apply_input_shapes, load_model
            from hwopt.node_data import site_rules
            from hwopt.node_data import write as write_node_data

            rules_at = site_rules(result)
            written = {n.name for n in best_model.graph.node}
            rewritten_rules = {n: r for n, r in rules_at.items() if n in written}
            canonical_names = {m.name for m in result.vm.analysis.model.graph.node}
            rewritten_rules.update({n: "new" for n in written if n not in canonical_names})
            original = load_model(model)
            apply_input_shapes(original, _shapes(input_shape))
            doc["node_data"] = [str(p) for p in write_node_data(node_data, [
                ("original", original, rules_at),
                ("rewritten", best_model, rewritten_rules)], load_estimator(result.target, allow_fallback=True))]
        if measure and best_model is not None and report is not None:
            _measured_kernels(doc, result.target, best_model)
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


@app.command()
def recover(
    original: Path = typer.Argument(..., help="the original ONNX model (never modified)"),
    rewritten: Path = typer.Argument(..., help="the model hwopt wrote from it (hwopt apply / optimize)"),
    output: Path = typer.Option(..., "-o", "--output", help="where to write the recovered model"),
    calibration: Path = typer.Option(..., "--calibration", help="unlabelled samples: .npz with arrays named after "
                                     "the inputs"),
    heldout: Optional[Path] = typer.Option(None, "--heldout", help="samples to judge on, never trained on "
                                           "(default: the last part of --calibration)"),
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
    eval_samples: int = typer.Option(64, "--eval-samples", min=1, help="held-out samples split off --calibration "
                                     "when there is no --heldout"),
    input_shape: Optional[List[str]] = InputShapes,
    seed: int = typer.Option(0, "--seed", help="seed of the sampling, augmentation and training"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on stdout"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress"),
) -> None:
    """Win back an inexact rewrite's fidelity: distil the rewritten model from the original on unlabelled samples."""
    with user_errors():
        from hwopt.recover import require_torch
        from hwopt.recover.budget import parse_duration

        require_torch()
        seconds = parse_duration(budget or "10m") if epochs is None or budget else None
        protect = [original, rewritten, calibration] + ([heldout] if heldout else [])
        if any(output.resolve() == p.resolve() for p in protect):
            raise HwoptError(f"refusing to overwrite the input {output}: choose another -o path")
        from hwopt.canonicalize import load_canonical
        from hwopt.modelio import apply_input_shapes, load_model, save_model
        from hwopt.recover.command import check_same_signature, run_recovery, samples, summary
        from hwopt.recover.train import RecoverySettings

        _, canonical, _ = load_canonical(original, _shapes(input_shape), seed=seed)
        student = load_model(rewritten)
        apply_input_shapes(student, _shapes(input_shape))
        check_same_signature(canonical, student, rewritten)
        from hwopt.fidelity import METRICS

        if fidelity != "auto" and fidelity not in METRICS:
            raise HwoptError(f"--fidelity {fidelity!r}: metrics are auto, {', '.join(METRICS)}")
        train, judged, split = samples(canonical, calibration, heldout, calibration_samples, eval_samples, seed)
        settings = RecoverySettings(epochs=epochs, seconds=seconds, seed=seed, lr=lr, batch=batch,
                                    train_all=train_all, threads=threads, block_share=block_share, ema=ema)

        def log(line: str) -> None:
            if not quiet:
                stderr.print(line, markup=False, highlight=False)

        log(f"recover: {split}")
        with progress_bar(quiet or as_json) as progress:
            result = run_recovery(canonical, student, train, judged, settings, output, progress, log, fidelity)
        save_model(result.model, output, protect=protect)
        figures = summary(result)
        if as_json:
            print(json.dumps({"output": str(output), "split": split, **figures}, indent=2))
        elif not quiet:
            stdout.print(f"held-out {figures['label']} with the original ({figures['held_out_samples']} "
                         f"samples): before {figures['before']:.2%}, after {figures['after']:.2%}; "
                         f"{len(result.history)} epochs in {figures['seconds']:.0f} s; rewritten blocks trained: "
                         f"{', '.join(figures['blocks']) or 'none found (end to end only)'}", highlight=False)
            stdout.print(f"wrote {output}", highlight=False)


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

        from hwopt.canonicalize import load_canonical
        from hwopt.estimate import load_estimator
        from hwopt.estimate.report import print_estimate
        from hwopt.kernels import schedule
        from hwopt.report_files import check_report_path, write_report

        check_report_path(report, "estimate")
        est = load_estimator(target, estimator, allow_fallback=allow_fallback)
        _, canonical, _ = load_canonical(model, _shapes(input_shape))
        start = time.perf_counter()  # after start-up and loading: what the search pays per model
        result = est.estimate(schedule(canonical, est.target.fusion))
        elapsed_ms = (time.perf_counter() - start) * 1000
        doc = {"model": str(model), "estimate_ms": elapsed_ms, **result.to_dict()}
        if report:
            from hwopt.provenance import estimator_provenance

            write_report(report, "estimate", {**doc, "run": {"command": command_line()},
                                              "provenance": estimator_provenance(est, result.fallbacks)})
        if as_json:
            print(json.dumps(doc, indent=2))
        else:
            print_estimate(stdout, result, str(model), elapsed_ms)


@app.command()
def train(
    table: Path = typer.Argument(..., help="measurements table (CSV or CSV.gz, see docs/measurements.md)"),
    output: Path = typer.Option(..., "-o", "--output", help="estimator folder to write (e.g. estimator/mydevice)"),
    target: str = typer.Option(DEFAULT_TARGET, "--target", "-t", help="the target the table was measured on"),
    end_to_end: Optional[Path] = typer.Option(None, "--end-to-end", help="CSV of whole models measured on the "
                                              "target (columns: model, latency_us; model paths relative to "
                                              "the CSV): learns the in-model term"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress"),
) -> None:
    """Train a latency (and off-chip traffic) estimator from a measurements table."""
    with user_errors():
        from hwopt.backends.base import read_table
        from hwopt.estimate.train import read_end_to_end, train_estimator
        from hwopt.targets import load_target

        from hwopt.outputs import check_output_folder

        check_output_folder("-o", output, [table] + ([end_to_end] if end_to_end else []))
        t = load_target(target)
        rows = read_table(table)
        measured = read_end_to_end(end_to_end, t) if end_to_end is not None else []
        with progress_bar(quiet) as progress:
            card = train_estimator(rows, t, output, progress, source=str(table), end_to_end=measured)
        if not quiet:
            groups = card["training"]["groups"]
            stdout.print(f"trained on {card['training']['rows']} kernels ({len(groups)} latency model(s): "
                         f"{', '.join(groups)}) in {card['training']['seconds']} s; wrote {output}")
            if card.get("in_model"):
                term = card["in_model"]
                conversions = (f" + layout conversions ({term['reorder_us']:.2f} us each + "
                               f"{term['reorder_ns_per_byte']:.4f} ns/byte)" if term.get("reorder_us", 0)
                               or term.get("reorder_ns_per_byte", 0) else "")
                floor = (f" (each kernel at least {term['floor_share']:.2f} x its scaled time)"
                         if term.get("floor_share") else "")
                stdout.print(f"in-model term from {term['models']} models: latency = {term['scale']:.3f} x kernel "
                             f"sum {term['per_kernel_us']:+.2f} us per kernel{floor}{conversions} (median error on "
                             f"them {term['median_abs_error_pct']:.1f}%)")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    """Warnings (e.g. a torn table row dropped) as one plain line, not Python's source-line format."""
    stderr.print(f"hwopt: warning: {message}", markup=False, highlight=False)


def _terminate(signum, frame) -> None:
    # A kill (SIGTERM) unwinds like Ctrl-C: the atomic writes' finally clauses remove their temporaries.
    raise KeyboardInterrupt


def main() -> None:
    import signal
    import warnings

    warnings.showwarning = _show_warning
    signal.signal(signal.SIGTERM, _terminate)
    app()


if __name__ == "__main__":
    sys.exit(main())
