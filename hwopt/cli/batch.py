"""The driver side of model batches: run the tasks, write every file, print reports and the summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table

from hwopt.executors.batch import Outcome, measure_task, optimize_task, outputs_in, summary_rows
from hwopt.executors import Task, TaskLost
from hwopt.executors.progress import rate_progress


def _ms(us) -> str:
    return "" if us is None else f"{us / 1000:.3f} ms"


def _run(executor, tasks: list[Task], models: Sequence[Path], label: str, console: Console, quiet: bool):
    """(index, Outcome) as each model finishes; a lost task becomes an internal-error outcome."""
    with rate_progress(console, quiet, unit="models") as progress:
        if progress:
            progress(label, 0, len(tasks))
        try:
            for count, (index, outcome) in enumerate(executor.run(tasks), 1):
                if isinstance(outcome, TaskLost):
                    outcome = Outcome(models[index], 3, f"hwopt: internal error: the task was lost: {outcome.reason}")
                if progress:
                    progress(label, count, len(tasks))
                yield index, outcome
        finally:
            executor.close()


def _cells(row: dict, columns: list[tuple[str, str]]) -> list[str]:
    cells = []
    for _, key in columns:
        value = row.get(key)
        if value is None:
            cells.append("")
        elif key.endswith("_us"):
            cells.append(_ms(value))
        elif key == "latency_change":
            cells.append(f"{value:+.1%}")
        elif key == "memory_bytes":
            cells.append(f"{value / 2**20:.2f} MiB")
        else:
            cells.append(str(value))
    return cells


def _summary_table(rows: list[dict], columns: list[tuple[str, str]]) -> Table:
    table = Table(*(title for title, _ in columns), title="summary")
    for row in rows:
        table.add_row(*_cells(row, columns))
    return table


def optimize_many(models: Sequence[Path], request, output: Path | None, report: Path | None,
                  save_rules: Path | None, as_json: bool, quiet: bool, executor, stdout: Console,
                  stderr: Console, run: dict) -> int:
    """``hwopt optimize`` of several models; returns the worst exit code. -o/--report/--save-rules name folders."""
    from hwopt.api import save_optimized
    from hwopt.io.atomic import atomic_write_text
    from hwopt.report.files import write_report
    from hwopt.report.optimize import print_report

    outs = outputs_in(output, models, ".hwopt.onnx")
    outs = [o or m.with_name(m.name.removesuffix(".onnx") + ".hwopt.onnx") for o, m in zip(outs, models)]
    reports = outputs_in(report, models, ".md")
    rules = outputs_in(save_rules, models, ".toml")
    from hwopt.io.outputs import check_outputs, model_files

    protect = [f for m in models for f in model_files(m)] + [p for p in (request.calibration, request.rules) if p]
    # Every file of every model up front: two models named alike (a/m.onnx, b/m.onnx) would write one file.
    planned = {f"{flag} ({model})": path for model, out, rep, rule in zip(models, outs, reports, rules)
               for flag, path in (("-o", out), ("--report", rep), ("--save-rules", rule))}
    if report is not None:
        planned["--report (summary)"] = report / "summary.md"
    check_outputs(planned, protect)
    tasks = [Task(optimize_task, (m, o, r, request, run)) for m, o, r in zip(models, outs, rules)]
    outcomes: list[Outcome | None] = [None] * len(models)
    for index, outcome in _run(executor, tasks, models, f"optimizing {len(models)} models", stderr,
                               quiet or as_json):
        outcomes[index] = outcome
        model = models[index]
        if outcome.best_model is not None:
            save_optimized(model, request, outcome.best_model, outcome.steps, outcome.doc["target"], outs[index],
                           rules[index], protect)
        if outcome.doc is not None and reports[index] is not None:
            write_report(reports[index], "optimize", outcome.doc)
        if not as_json and not quiet:
            stdout.rule(str(model))
            if outcome.doc is not None:
                print_report(stdout, outcome.doc)
                if outcome.best_model is not None and outcome.steps:
                    stdout.print(f"wrote {outs[index]}" + (f" and {rules[index]}" if rules[index] else ""),
                                 highlight=False)
        if outcome.error:
            stderr.print(f"{model}: {outcome.error}", markup=False, highlight=False)
        for line in outcome.failure if outcome.code == 1 else []:
            stderr.print(f"{model}: hwopt: {line}", markup=False, highlight=False)
    done = [o for o in outcomes if o is not None]
    rows = summary_rows(done)
    columns = [("model", "model"), ("status", "status"), ("baseline", "baseline_latency_us"),
               ("best", "best_latency_us"), ("change", "latency_change"), ("memory", "memory_bytes"),
               ("rules", "rules")]
    if report is not None:
        lines = ["# hwopt optimize: summary", "", "| " + " | ".join(t for t, _ in columns) + " |",
                 "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cells(row, columns)) + " |" for row in rows]
        atomic_write_text(report / "summary.md", "\n".join(lines) + "\n")
    if as_json:
        print(json.dumps({"schema": "hwopt.optimize-batch/1", "summary": rows,
                          "reports": [o.doc for o in done]}, indent=2))
    elif not quiet:
        stdout.print(_summary_table(rows, columns))
    return max(o.code for o in done)


def measure_many(models: Sequence[Path], target: str, input_shapes: list, as_given: bool, as_json: bool, executor,
                 stdout: Console, stderr: Console) -> int:
    """``hwopt measure`` of several models; returns the worst exit code."""
    tasks = [Task(measure_task, (m, target, input_shapes, as_given)) for m in models]
    outcomes: list[Outcome | None] = [None] * len(models)
    for index, outcome in _run(executor, tasks, models, f"measuring {len(models)} models", stderr, as_json):
        outcomes[index] = outcome
        if outcome.measured is not None and not as_json:
            stdout.print(f"{models[index]} on {outcome.measured['target']}: "
                         f"{outcome.measured['latency_us'] / 1000:.3f} ms", highlight=False)
        if outcome.error:
            stderr.print(f"{models[index]}: {outcome.error}", markup=False, highlight=False)
    done = [o for o in outcomes if o is not None]
    rows = summary_rows(done)
    if as_json:
        print(json.dumps({"schema": "hwopt.measure-batch/1", "target": target, "summary": rows,
                          "measurements": [{"model": str(o.model), **(o.measured or {})} for o in done]}, indent=2))
    else:
        stdout.print(_summary_table(rows, [("model", "model"), ("status", "status"), ("latency", "latency_us")]))
    return max(o.code for o in done)
