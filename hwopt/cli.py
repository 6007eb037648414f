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
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hwopt.errors import HwoptError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make ONNX vision models fast on neural accelerators with curated, verified rewrites.")

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

InputShapes = typer.Option(None, "--input-shape", help="fix an input's shape: NAME=1x3x224x224 (repeatable)")


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input: one line and exit 2. Anything else: one line and exit 3 (traceback on demand)."""
    try:
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


def _shapes(values: Optional[List[str]]):
    from hwopt.modelio import InputShape

    return [InputShape.parse(v) for v in values or []]


@contextmanager
def progress_bar(quiet: bool):
    """A rich progress bar on stderr; yields a callback (label, done, total)."""
    if quiet:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        tasks: dict[str, int] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done, total=total)

        yield update


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
    calibration: Optional[Path] = typer.Option(None, "--calibration", help=".npz with arrays named after the inputs"),
    calibration_samples: int = typer.Option(64, "--calibration-samples", min=1, help="samples used for refits"),
    eval_samples: int = typer.Option(8, "--eval-samples", min=1, help="held-out samples for verification"),
    seed: int = typer.Option(0, "--seed", help="seed for random inputs and sampling"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on stdout"),
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
        protect = [model] + ([calibration] if calibration else []) + ([rules_file] if rules_file else [])
        for path in protect:
            if output.resolve() == path.resolve():
                raise HwoptError(f"refusing to overwrite the input {path}: choose another -o path")
        original, canonical, _ = load_canonical(model, _shapes(input_shape), seed=seed)
        calib, evaluation = _calibration_sets(original, calibration, calibration_samples, eval_samples, seed)
        with progress_bar(quiet or as_json) as progress:
            result = apply_steps(original, canonical, steps, calib, evaluation, seed=seed, progress=progress)
        save_model(result.model, output, protect=protect)
        if as_json:
            print(json.dumps({"output": str(output), **apply_dict(result)}, indent=2))
        elif not quiet:
            print_apply(stdout, result)
            stdout.print(f"wrote {output}")


def _calibration_sets(model, path: Optional[Path], count: int, eval_count: int, seed: int):
    """Calibration and held-out evaluation inputs: from the user's file (split) or seeded random."""
    from hwopt.calibration import load_calibration, random_inputs

    if path is None:
        return random_inputs(model, count, seed), random_inputs(model, eval_count, seed + 1)
    data = load_calibration(path, model)
    total = len(next(iter(data.values())))
    if total < 2:
        raise HwoptError(f"{path}: needs at least 2 samples (some are held out for verification)")
    held = min(eval_count, max(1, total // 4))
    calib = {k: v[: min(count, total - held)] for k, v in data.items()}
    evaluation = {k: v[total - held:] for k, v in data.items()}
    return calib, evaluation


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
