"""``hwopt profile``: measure the kernel sweep on a target (resumable), or import a table measured elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from hwopt.errors import HwoptError

from hwopt.cli.app import app
from hwopt.cli.common import (stdout, stderr, TargetOption, InputShapes, ExecutorOption, JobsOption,
                              AddressOption, ResourceOption, executor_for, user_errors, input_shapes)


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
    in_context: bool = typer.Option(False, "--in-context", help="instead of the sweep: compile the --from models "
                                    "(files or folders of .onnx) and the examples WHOLE and price each kernel by "
                                    "its share of the model's time (Vela's per-layer cycles); in this process"),
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
        from hwopt.canonical.canonicalize import load_canonical
        from hwopt.executors.progress import rate_progress
        from hwopt.estimator.profile import ORDERS, profile_with, sweep

        if order not in ORDERS:
            raise HwoptError(f"--order {order!r}: choose one of {', '.join(ORDERS)}")
        get_backend(t)  # first: a missing backend is the first thing to say
        if in_context:
            _profile_in_context(t, from_models or [], examples, output or default_out, quiet)
            return
        models = [load_canonical(m, input_shapes(input_shape))[1] for m in from_models or []]
        if decisions:
            from hwopt.estimator.profile import _example_canonicals
            from hwopt.search.decisions import decision_kernels

            sources = (list(_example_canonicals()) if examples else []) + models
            kernels = list(dict.fromkeys(k for m in sources for k in decision_kernels(m, t)))
        else:
            kernels = sweep(t.parallelism, models, examples=examples, seed=seed)
        if kinds:
            from hwopt.analysis.kernel import KINDS

            unknown = sorted(set(kinds) - set(KINDS))
            if unknown:
                raise HwoptError(f"--kind {unknown[0]!r}: kernel kinds are {', '.join(KINDS)}")
            kernels = [k for k in kernels if k.kind in kinds]
        if skip:
            from hwopt.backends.table_file import read_table

            known = {m.kernel for table in skip for m in read_table(table)}
            kernels = [k for k in kernels if k not in known]
        kernels = ORDERS[order](kernels[:count] if count is not None else kernels, t)
        runner = executor_for(executor, jobs, address, resource)
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


def _onnx_files(paths: List[Path]) -> List[Path]:
    """Each path, or every .onnx in it when it is a folder (sorted); a missing one is refused first."""
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.onnx"))
            if not found:
                raise HwoptError(f"--from {path}: the folder holds no .onnx model")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise HwoptError(f"--from {path}: no such model or folder")
    return files


def _profile_in_context(t, from_models: List[Path], examples: bool, output: Path, quiet: bool) -> None:
    """``--in-context``: whole models compiled, one row per kernel descriptor (the mean of its in-model
    figures), appended to the table for the kernels it lacks."""
    from hwopt.backends import in_context_measurer
    from hwopt.backends.table_file import TableAppender
    from hwopt.executors.progress import rate_progress
    from hwopt.estimator.in_context import in_context_rows
    from hwopt.estimator.profile import _example_canonicals

    in_context_measurer(t)  # a backend that cannot attribute is refused before any work
    models = list(_example_canonicals() if examples else []) + _onnx_files(from_models)
    if not models:
        raise HwoptError("--in-context needs models: give --from MODEL.onnx or a folder (the examples are "
                         "not installed or --no-examples)")
    failed: list = []
    with rate_progress(stderr, quiet, unit="models") as progress:
        rows, results = in_context_rows(models, t, progress, failed)
    with TableAppender(output) as table:
        new = [m for m in rows if m.kernel not in table.done]
        table.append(new)
        if new and output.suffix == ".gz":
            table.compact()
        total = table.rows
    if not quiet:
        gap = max((abs(r.attributed_us / r.latency_us - 1) for r in results if r.latency_us), default=0.0)
        stdout.print(f"{len(results)} models compiled whole: {len(rows)} kernels priced in context "
                     f"({len(new)} new); {total} rows in {output} (largest gap between a model's kernels and "
                     f"its Vela time: {gap:.2%})")
    for model, message in failed[:5]:
        stderr.print(f"hwopt: not compiled: {model}: {message}", markup=False, highlight=False)
    if failed:
        raise HwoptError(f"{len(failed)} model(s) could not be compiled (listed above); the rest are saved")
