"""Model batches: ``hwopt optimize`` / ``hwopt measure`` over many models through an executor.

Each model is one task, run wherever the executor runs it; the task returns
what the command would print and write (the report, the best graph, the rule
set), and this process, the only writer, writes the files and prints one
report per model, then a summary table. A model that fails (bad input: exit
2, an internal error: exit 3, no variant within the budgets: exit 1) does not
stop the others; the batch's exit code is the worst of the models'.

With the ``ray`` executor the model paths must be readable at the same path
on every node (a shared filesystem, or the same checkout everywhere).
"""

from __future__ import annotations

import glob
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hwopt.errors import HwoptError

_GLOB_CHARS = set("*?[")


def expand_models(arguments: Sequence[Path]) -> list[Path]:
    """Paths as given, globs expanded (sorted); a glob that matches nothing is an error."""
    paths: list[Path] = []
    for argument in arguments:
        text = str(argument)
        if _GLOB_CHARS & set(text) and not argument.exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise HwoptError(f"{text}: no file matches")
            paths += [Path(m) for m in matches]
        else:
            paths.append(argument)
    duplicates = sorted({str(p) for p in paths if paths.count(p) > 1})
    if duplicates:
        raise HwoptError(f"{duplicates[0]} is given twice")
    return paths


def outputs_in(folder: Path | None, models: Sequence[Path], suffix: str) -> list[Path | None]:
    """Per model: FOLDER/<model name without .onnx><suffix> (None without a folder); names must not collide."""
    if folder is None:
        return [None] * len(models)
    if folder.exists() and not folder.is_dir():
        raise HwoptError(f"{folder}: with several models this names a folder (one file per model), not a file")
    names = [m.name.removesuffix(".onnx") + suffix for m in models]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise HwoptError(f"two models would both write {folder / clash[0]}: give models with distinct names")
    return [folder / n for n in names]


@dataclass
class Outcome:
    """One model's result as a task hands it back."""

    model: Path
    code: int  # the exit code a single-model run would have given
    error: str = ""  # the one line a failed run would have printed
    doc: dict | None = None  # optimize: the report (schema hwopt.optimize/1)
    best_model: Any = None  # optimize: the chosen graph (onnx.ModelProto)
    steps: list = field(default_factory=list)  # optimize: the chosen variant's rule steps
    failure: list[str] = field(default_factory=list)  # optimize: why no variant met the budgets
    measured: dict | None = None  # measure: latency_us, backend, meta


def run_safely(model: Path, work: Callable[[], Outcome]) -> Outcome:
    """``work()``, with a failure turned into the exit code and line the CLI would have given."""
    try:
        return work()
    except HwoptError as exc:
        return Outcome(model, 2, f"hwopt: error: {exc}")
    except Exception as exc:  # noqa: BLE001 - one model's crash must not take the batch down
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Outcome(model, 3, f"hwopt: internal error: {type(exc).__name__}: {message}",
                       failure=traceback.format_exc().splitlines()[-3:])


def optimize_task(model: Path, output: Path, save_rules: Path | None, request, run: dict[str, Any]) -> Outcome:
    """An executor task: ``hwopt optimize`` of one model (an ``OptimizeRequest``), nothing written (the
    driver writes)."""

    def work() -> Outcome:
        from hwopt.api import inputs_info
        from hwopt.report.optimize import to_dict
        from hwopt.search.optimize import optimize as run_optimize

        if not model.is_file():
            raise HwoptError(f"{model}: no such file (with --executor ray: not on this node; models must be on "
                             f"a filesystem every node sees)")
        result, best = run_optimize(model, request, progress=None)
        doc = to_dict(result, output, save_rules, {**run, "pick": None, "inputs": inputs_info(
            request.calibration, request.calibration_samples, request.eval_samples)})
        steps = list(result.best.steps) if result.best is not None else []
        return Outcome(model, 0 if best is not None else 1, doc=doc, best_model=best, steps=steps,
                       failure=list(result.failure or []))

    return run_safely(model, work)


def measure_task(model: Path, target_name: str, input_shapes: list, as_given: bool) -> Outcome:
    """An executor task: ``hwopt measure`` of one model."""

    def work() -> Outcome:
        from hwopt.backends import model_measurer
        from hwopt.canonical.canonicalize import check_input_dims
        from hwopt.io.model import apply_input_shapes, load_model
        from hwopt.targets import load_target

        t = load_target(target_name)
        measurer = model_measurer(t)
        proto = load_model(model)
        apply_input_shapes(proto, input_shapes)
        check_input_dims(proto)
        if as_given and t.backend != "onnxruntime":
            raise HwoptError(f"--as-given is for onnxruntime targets; {t.name} always measures the canonical kernels")
        result = measurer(proto if input_shapes else model, t, **({"as_given": True} if as_given else {}))
        measured = {"latency_us": float(getattr(result, "latency_us", result)),
                    "backend": getattr(result, "backend", t.backend), "meta": dict(getattr(result, "meta", {}) or {}),
                    "target": t.name}
        return Outcome(model, 0, measured=measured)

    return run_safely(model, work)


STATUS = {0: "ok", 1: "no variant within the budgets", 2: "bad input", 3: "internal error"}


def summary_rows(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """One row per model for the summary table (and --json)."""
    rows = []
    for o in outcomes:
        row: dict[str, Any] = {"model": str(o.model), "exit_code": o.code, "status": STATUS.get(o.code, "?"),
                               "error": o.error or None}
        if o.doc is not None:
            baseline = o.doc["variants"][0] if o.doc["variants"] else None
            best = o.doc["best"]
            row.update(baseline_latency_us=baseline["latency_us"] if baseline else None,
                       best_latency_us=best["latency_us"] if best else None,
                       latency_change=best["latency_change"] if best else None,
                       memory_bytes=best["memory_bytes"] if best else None,
                       rules=best["label"] if best else None, output=o.doc["output"])
        if o.measured is not None:
            row.update(latency_us=o.measured["latency_us"], target=o.measured["target"])
        rows.append(row)
    return rows
