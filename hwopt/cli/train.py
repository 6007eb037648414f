"""``hwopt train``: train a latency (and off-chip traffic) estimator from a measurements table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hwopt.cli.app import app
from hwopt.cli.common import stdout, DEFAULT_TARGET, user_errors, progress_bar


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
        from hwopt.backends.table_file import read_table
        from hwopt.estimator.train import read_end_to_end, train_estimator
        from hwopt.targets import load_target

        from hwopt.io.outputs import check_output_folder

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
