"""What every command shares: consoles, option declarations, error handling, progress, inputs."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator, List, Optional

import typer

from hwopt.errors import HwoptError
from hwopt.report.console import PipeConsole

# Piped (a file, a log, another program): full width, nothing cut (hwopt.report.console).
stdout = PipeConsole()
stderr = PipeConsole(stderr=True)

from hwopt.targets import DEFAULT_TARGET  # one default target for every command
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
LabelsOption = typer.Option("auto", "--labels", help="recovery with labels: auto (an .npz's 'label' array: one class "
                            "index per sample) | folders (also a folder with one sub-folder per class, ImageFolder "
                            "order: sorted names) | none (ignore labels: label-free distillation)")
LabelWeight = typer.Option(0.5, "--label-weight", min=0.0, max=1.0, help="with labels: weight w of the cross-entropy "
                           "in the end-to-end loss, (1 - w) x distillation + w x cross-entropy")
CalibrationSamples = typer.Option(64, "--calibration-samples", min=1, help="samples used for refits")
Holdout = typer.Option(0.25, "--holdout", help="calibration samples held out, never fitted on, to judge fidelity: "
                       "a fraction below 1 or a count (whole groups when the .npz has a '_group' array)")
FidelityOption = typer.Option("auto", "--fidelity", help="task fidelity metric: auto | top1 | top5 | argmax | "
                              "cosine | rel-l2 (auto: a classifier, one output [N, C] with C >= 2 whatever the class count, "
                              "by top-1 agreement; a dense class map [N, C>=2, H, W] by per-pixel argmax; anything "
                              "else by cosine; the report says which and why)")


def command_line() -> str:
    """The command as typed (for report headers)."""
    import shlex

    return "hwopt " + " ".join(shlex.quote(a) for a in sys.argv[1:])


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


def executor_for(name: str, jobs: int, address: Optional[str], resources: Optional[List[str]]):
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
            warnings.showwarning = show_warning  # also in-process (tests, embedding), not only via main()
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


def input_shapes(values: Optional[List[str]]):
    from hwopt.io.model import parse_input_shapes

    return parse_input_shapes(values)


@contextmanager
def progress_bar(quiet: bool):
    """Progress on stderr (hwopt.progress): live bars on a terminal, a line per stage in a log."""
    from hwopt.progress import progress_bar as bars

    with bars(stderr, quiet) as callback:
        yield callback


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    """Warnings (e.g. a torn table row dropped) as one plain line, not Python's source-line format."""
    stderr.print(f"hwopt: warning: {message}", markup=False, highlight=False)
