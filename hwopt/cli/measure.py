"""``hwopt measure``: the whole model's latency on a target (cpu: timed end to end with onnxruntime, canonical form)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from hwopt.errors import HwoptError

from hwopt.cli.app import app
from hwopt.cli.common import (stdout, stderr, TargetOption, ReportOption, InputShapes, command_line,
                              ExecutorOption, JobsOption, AddressOption, ResourceOption, executor_for,
                              user_errors, input_shapes)


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
        from hwopt.executors.batch import expand_models

        paths = expand_models(models)
        if len(paths) > 1:
            from hwopt.cli.batch import measure_many

            if report is not None:
                raise HwoptError("--report is for one model at a time (several models: --json)")

            raise typer.Exit(measure_many(paths, target, input_shapes(input_shape), as_given, as_json,
                                          executor_for(executor, jobs, address, resource), stdout, stderr))
        model = paths[0]
        from hwopt.backends import model_measurer
        from hwopt.canonical.canonicalize import check_input_dims
        from hwopt.io.model import apply_input_shapes, load_model
        from hwopt.targets import load_target

        from hwopt.report.files import check_report_path, write_report

        check_report_path(report, "measure")
        t = load_target(target)
        measurer = model_measurer(t)  # before loading: a missing backend is the first thing to say
        proto = load_model(model)
        apply_input_shapes(proto, input_shapes(input_shape))
        check_input_dims(proto)
        if as_given and t.backend != "onnxruntime":
            raise HwoptError(f"--as-given is for onnxruntime targets; {t.name} always measures the canonical kernels")
        result = measurer(proto if input_shape else model, t, **({"as_given": True} if as_given else {}))
        latency = float(getattr(result, "latency_us", result))
        meta = dict(getattr(result, "meta", {}) or {})
        if report:
            write_report(report, "measure", measure_doc(model, proto, t, latency, result, meta))
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


def measured_kernels(doc: dict, target, model) -> None:
    """optimize --measure: the written model's estimate against its measurement, kernel by kernel, where the
    target's backend measures kernels (npu32: emulated, from the disk cache the --measure run filled)."""
    from hwopt.backends import model_measurer
    from hwopt.estimate import load_estimator
    from hwopt.report.provenance import per_kernel

    pairs = list(getattr(model_measurer(target)(model, target), "kernels", None) or [])
    provenance = doc.setdefault("provenance", {})
    if pairs:
        provenance["per_kernel"] = per_kernel(load_estimator(target, allow_fallback=True), pairs)
        provenance["measured_by"] = f"{target.backend}, the written model kernel by kernel"
    else:
        provenance["note"] = f"{target.name} measures whole models end to end: no per-kernel comparison"


def measure_doc(model: Path, proto, target, latency: float, result, meta: dict) -> dict:
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
    from hwopt.canonical.canonicalize import canonicalize
    from hwopt.report.provenance import estimator_provenance, per_kernel

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
