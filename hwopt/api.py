"""hwopt's Python API: the commands as functions, for a deployment pipeline step written in Python.

    import hwopt

    result = hwopt.optimize("model.onnx", target="npu32", calibration="calib.npz",
                            output="model.opt.onnx", report="report.html")
    if not result.ok:
        raise SystemExit("; ".join(result.failure))
    print(result.best["latency_change"], result.fidelity["metric"])

Each function does what its command does, with the same checks: bad input raises ``hwopt.HwoptError``
(one line, before any long work), input files are never written, every output is written whole. Each
returns a ``Result``: the command's JSON document (``docs/optimize-json.md`` for optimize), its fields
readable as attributes or keys, and the graph it produced, if any. ``optimize`` takes an
``OptimizeRequest`` (``hwopt.request``) or its fields as keywords; the CLI and model batches build the
same request. Nothing is printed; progress goes to an optional ``progress(label, done, total)`` callback.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import onnx

from hwopt.errors import HwoptError
from hwopt.request import DEFAULT_TARGET, OptimizeRequest

Progress = Callable[[str, int, int], None]
PYTHON_RUN = {"command": "hwopt Python API"}


@dataclass(frozen=True)
class Result:
    """A command's result: ``doc`` is its JSON document; ``model`` the graph it produced (or None)."""

    doc: dict[str, Any]
    model: onnx.ModelProto | None = field(default=None, repr=False)
    detail: Any = field(default=None, repr=False, compare=False)  # the stage's own result object, for experts

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not attributes: the document's fields (result.best, result.target).
        doc = object.__getattribute__(self, "doc")
        if name in doc:
            return doc[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r} (fields: {', '.join(doc)})")

    def __getitem__(self, key: str) -> Any:
        return self.doc[key]

    @property
    def ok(self) -> bool:
        """A model was produced within the budgets (optimize), or the command did its work."""
        return self.doc.get("status", "ok") == "ok"

    @property
    def exit_code(self) -> int:
        """What the command line would exit with: 0 ok, 1 no variant within the budgets."""
        return 0 if self.ok else 1

    def to_json(self) -> str:
        return json.dumps(self.doc, indent=2)


def _paths(values: Sequence[str | Path]) -> list[Path]:
    return [Path(v) for v in values if v is not None]


def optimize(model: str | Path, request: OptimizeRequest | None = None, *, output: str | Path | None = None,
             report: str | Path | None = None, save_rules: str | Path | None = None,
             node_data: str | Path | None = None, progress: Progress | None = None,
             run: dict[str, Any] | None = None, **settings: Any) -> Result:
    """Search the rewrites for the fastest variant within the budgets; verify it; write what is asked.

    ``request`` or keyword ``settings`` (the fields of ``OptimizeRequest``: ``target``, ``max_memory``,
    ``calibration``, ``min_fidelity``, ``exact_only``, ...; not both). ``output``: write the chosen
    model there (default: nothing written; ``Result.model`` holds it). ``report``: .html, .md or .json
    by extension. ``save_rules``: the chosen decisions as a rule set. ``node_data``: Model Explorer
    overlays (FILE.json -> FILE.original.*.json, FILE.rewritten.*.json). ``run``: how it was run, for
    the report's header. ``Result.ok`` is False (exit code 1) when no variant meets the budgets, with
    ``Result.failure`` saying why.
    """
    from hwopt.io.outputs import check_outputs, model_files
    from hwopt.report.files import check_report_path, write_report
    from hwopt.report.optimize import to_dict
    from hwopt.search.optimize import optimize as search

    if request is not None and settings:
        raise HwoptError(f"give an OptimizeRequest or its settings as keywords, not both ({', '.join(settings)})")
    request = request if request is not None else OptimizeRequest(**settings)
    model = Path(model)
    if not model.is_file():
        raise HwoptError(f"{model}: no such file")
    output, report, save_rules, node_data = (Path(p) if p is not None else None
                                             for p in (output, report, save_rules, node_data))
    protect = model_files(model) + _paths([request.calibration, request.rules])
    overlays = _node_data_paths(node_data)
    check_outputs({"-o": output, "--report": report, "--save-rules": save_rules, **overlays}, protect)
    check_report_path(report, "optimize")
    request.check_inputs()
    if request.recover is not None:
        from hwopt.recover import require_torch

        require_torch()  # before any work: one line naming the extra
    result, best = search(model, request, progress)
    run = {**(run or PYTHON_RUN), "pick": request.pick,
           "inputs": inputs_info(request.calibration, request.calibration_samples, request.eval_samples)}
    doc = to_dict(result, output, save_rules, run)
    save_optimized(model, request, best, result.best.steps if result.best is not None else [], result.target.name,
                   output, save_rules, protect)
    if node_data is not None and best is not None:
        doc["node_data"] = [str(p) for p in _write_node_data(node_data, model, request, result, best)]
    if request.measure and best is not None and report is not None:
        measured_kernels(doc, result.target, best)
    if report is not None:
        write_report(report, "optimize", doc)
    return Result(doc, best, result)


def inputs_info(calibration: Path | None, calibration_samples: int, eval_samples: int | None) -> dict[str, Any]:
    """The report's account of the samples that refit and judged the model."""
    return {"calibration": str(calibration) if calibration else "random (standard normal)",
            "random": calibration is None, "calibration_samples": calibration_samples, "eval_samples": eval_samples}


def save_optimized(model: Path, request: OptimizeRequest, best: onnx.ModelProto | None, steps: list, target: str,
                   output: Path | None, save_rules: Path | None, protect: list[Path]) -> None:
    """Write the chosen model and its decisions as a rule set (one model; batches call it per model).

    No file churn: when the chosen variant is the original (no rewrite, or none worth its gain: the report's
    ``nothing_to_do`` says why) nothing is written at all; a file already at ``output`` is left as it is."""
    if best is None or not steps:
        return
    from hwopt.io.model import save_model
    from hwopt.search.rulefile import rules_header, write_rules

    if output is not None:
        save_model(best, output, protect=protect)
    if save_rules is not None:
        write_rules(save_rules, steps, rules_header(model, request, target, save_rules, steps))


def _node_data_paths(node_data: Path | None) -> dict[str, Path]:
    if node_data is None:
        return {}
    from hwopt.report.node_data import paths

    if node_data.suffix.lower() != ".json":
        raise HwoptError(f"--node-data {node_data}: give a .json file name (FILE.json writes "
                         f"FILE.original.latency.json and its siblings)")
    return {f"--node-data ({p.name})": p for g in ("original", "rewritten") for p in paths(node_data, g).values()}


def _write_node_data(node_data: Path, model: Path, request: OptimizeRequest, result, best: onnx.ModelProto):
    from hwopt.estimator import load_estimator
    from hwopt.io.model import apply_input_shapes, load_model
    from hwopt.report.node_data import site_rules, write

    rules_at = site_rules(result)
    written = {n.name for n in best.graph.node}
    rewritten_rules = {n: r for n, r in rules_at.items() if n in written}
    canonical_names = {m.name for m in result.vm.analysis.model.graph.node}
    rewritten_rules.update({n: "new" for n in written if n not in canonical_names})
    original = load_model(model)
    apply_input_shapes(original, request.shapes())
    return write(node_data, [("original", original, rules_at), ("rewritten", best, rewritten_rules)],
                 load_estimator(result.target, allow_fallback=True))


def measured_kernels(doc: dict, target, model: onnx.ModelProto) -> None:
    """optimize --measure: the written model's estimate against its measurement, kernel by kernel, where the
    target's backend measures kernels (npu32: emulated, from the disk cache the --measure run filled)."""
    from hwopt.backends import model_measurer
    from hwopt.estimator import load_estimator
    from hwopt.report.provenance import per_kernel

    pairs = list(getattr(model_measurer(target)(model, target), "kernels", None) or [])
    provenance = doc.setdefault("provenance", {})
    if pairs:
        provenance["per_kernel"] = per_kernel(load_estimator(target, allow_fallback=True), pairs)
        provenance["measured_by"] = f"{target.backend}, the written model kernel by kernel"
    else:
        provenance["note"] = f"{target.name} measures whole models end to end: no per-kernel comparison"


def estimate(model: str | Path, target: str = DEFAULT_TARGET, *, input_shapes: Sequence[str] = (),
             estimator: str | Path | None = None, allow_fallback: bool = False, report: str | Path | None = None,
             run: dict[str, Any] | None = None) -> Result:
    """Predicted latency per kernel and in total, parameter and peak activation memory, off-chip traffic.

    ``Result.detail`` is the ``hwopt.estimator.ModelEstimate``; ``doc["estimate_ms"]`` the time the
    prediction took (what the search pays per model).
    """
    import time

    from hwopt.analysis.kernels import schedule
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.estimator import load_estimator
    from hwopt.io.model import parse_input_shapes
    from hwopt.report.files import check_report_path, write_report

    report = Path(report) if report is not None else None
    check_report_path(report, "estimate")
    est = load_estimator(target, Path(estimator) if estimator is not None else None, allow_fallback=allow_fallback)
    _, canonical, _ = load_canonical(model, parse_input_shapes(input_shapes))
    start = time.perf_counter()  # after start-up and loading
    result = est.estimate(schedule(canonical, est.target.fusion))
    elapsed_ms = (time.perf_counter() - start) * 1000
    doc = {"model": str(model), "estimate_ms": elapsed_ms, **result.to_dict()}
    if report is not None:
        from hwopt.report.provenance import estimator_provenance

        write_report(report, "estimate", {**doc, "run": run or PYTHON_RUN,
                                          "provenance": estimator_provenance(est, result.fallbacks)})
    return Result(doc, None, result)


def measure(model: str | Path, target: str = DEFAULT_TARGET, *, input_shapes: Sequence[str] = (),
            as_given: bool = False, report: str | Path | None = None, run: dict[str, Any] | None = None,
            progress: Progress | None = None) -> Result:
    """The whole model's latency on the target, by its judge (cpu: onnxruntime end to end, canonical form;
    npu32: its kernels emulated). ``doc``: ``latency_us``, ``backend``, ``meta`` (what the judge reports).
    ``progress(label, done, total)``: the stages of a judge that measures kernel by kernel (npu32)."""
    from hwopt.backends import model_measurer
    from hwopt.canonical.canonicalize import check_input_dims
    from hwopt.io.model import apply_input_shapes, load_model, parse_input_shapes
    from hwopt.report.files import check_report_path, write_report
    from hwopt.targets import load_target

    model = Path(model)
    report = Path(report) if report is not None else None
    check_report_path(report, "measure")
    t = load_target(target)
    measurer = model_measurer(t)  # before loading: a missing backend is the first thing to say
    proto = load_model(model)
    apply_input_shapes(proto, parse_input_shapes(input_shapes))
    check_input_dims(proto)
    if as_given and t.backend != "onnxruntime":
        raise HwoptError(f"--as-given is for onnxruntime targets; {t.name} always measures the canonical kernels")
    options: dict[str, Any] = {"as_given": True} if as_given else {}
    if progress is not None and "progress" in inspect.signature(measurer).parameters:
        options["progress"] = progress
    result = measurer(proto if input_shapes else model, t, **options)
    latency = float(getattr(result, "latency_us", result))
    meta = dict(getattr(result, "meta", {}) or {})
    doc = {"model": str(model), "target": t.name, "latency_us": latency,
           "backend": getattr(result, "backend", t.backend), "meta": meta}
    if report is not None:
        write_report(report, "measure", _measure_doc(doc, proto, t, result, run or PYTHON_RUN))
    return Result(doc, None, result)


def _measure_doc(doc: dict, proto: onnx.ModelProto, target, result, run: dict) -> dict:
    """The measure report: the measurement, the estimate beside it, per kernel where the backend measured kernels."""
    doc = {**doc, "run": run, "estimated_us": None}
    from hwopt.estimator import load_estimator

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


def apply(model: str | Path, rules: Sequence[str] = (), *, rules_file: str | Path | None = None,
          output: str | Path | None = None, report: str | Path | None = None, input_shapes: Sequence[str] = (),
          calibration: str | Path | None = None, preprocess: str | None = None, calibration_samples: int = 64,
          eval_samples: int | None = None, holdout: float = 0.25, seed: int = 0, progress: Progress | None = None,
          run: dict[str, Any] | None = None, canonical_only: bool = False) -> Result:
    """Apply rule steps in order (``rules_file`` first, then ``rules`` in ``--rule`` syntax, e.g.
    ``"fuse-ibn@ibn1,ibn2"``), each verified with onnxruntime against its input; write ``output``.
    ``canonical_only``: no rules, the canonical form itself (verified exact) is written.

    ``Result.doc`` has ``exact``, each step's figures and the deviation; ``Result.model`` the graph.
    """
    from hwopt.calibration.samples import calibration_sets, check_calibration_source
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.io.model import parse_input_shapes, save_model
    from hwopt.io.outputs import check_outputs, model_files
    from hwopt.report.files import check_report_path, write_report
    from hwopt.report.tables import apply_dict
    from hwopt.rewrites.apply import apply_steps
    from hwopt.rewrites.ruleset import load_rule_file, parse_rule_option

    model = Path(model)
    output, report, rules_file, calibration = (Path(p) if p is not None else None
                                               for p in (output, report, rules_file, calibration))
    if isinstance(rules, str):
        rules = [rules]
    steps = (load_rule_file(rules_file) if rules_file else []) + [parse_rule_option(r) for r in rules]
    if steps and canonical_only:
        raise HwoptError("--canonical-only writes the model without rules: drop --rule/--rules, or --canonical-only")
    if not steps and not canonical_only:
        raise HwoptError("no rules given: use --rule NAME[...] or --rules FILE (see 'hwopt rules'), or "
                         "--canonical-only for hwopt's canonical form alone")
    protect = model_files(model) + _paths([calibration, rules_file])
    check_outputs({"-o": output, "--report": report}, protect)
    check_report_path(report, "apply")
    check_calibration_source(calibration, preprocess)
    original, canonical, _ = load_canonical(model, parse_input_shapes(input_shapes), seed=seed, for_writing=True)
    calib, evaluation = calibration_sets(original, calibration, calibration_samples, eval_samples, seed,
                                         preprocess, holdout)
    result = apply_steps(original, canonical, steps, calib, evaluation, seed=seed, progress=progress)
    if output is not None:
        save_model(result.model, output, protect=protect)
    source = str(calibration) if calibration else "random (standard normal)"
    doc = {"model": str(model), "output": str(output) if output else None, "calibration": source,
           **apply_dict(result)}
    if report is not None:
        write_report(report, "apply", {**doc, "run": {**(run or PYTHON_RUN), "inputs": inputs_info(
            calibration, calibration_samples, eval_samples)}})
    return Result(doc, result.model, result)
