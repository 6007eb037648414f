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
                              user_errors, input_shapes, progress_bar)


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
        from hwopt.api import measure as run_measure

        # A backend that measures kernel by kernel (npu32: minutes of emulation on a large model) says how
        # far it is: a live bar on a terminal, a line per stage in a log.
        with progress_bar(as_json) as progress:
            result = run_measure(paths[0], target, input_shapes=input_shape or (), as_given=as_given, report=report,
                                 run={"command": command_line()}, progress=progress)
        if as_json:
            print(json.dumps(result.doc, indent=2))
            return
        meta = result.meta
        detail = (f" ({meta.get('form', 'canonical')} form, mean of {meta.get('sessions', 1)} session medians, "
                  f"{meta['repeats']} runs, {meta.get('threads', '?')} thread(s))" if "repeats" in meta else "")
        if meta.get("reorders"):
            detail += (f"; of which {meta['reorders']} layout conversions (NCHWc reorders): "
                       f"{meta['reorder_us'] / 1000:.3f} ms, profiled")
        if "cycles_npu" in meta:  # vela: what the compiler says besides the time
            detail += (f" (Vela {meta.get('vela_version', '')}, {meta['accelerator_config']}, "
                       f"{meta['system_config']}, {meta['memory_mode']}): {meta['cycles_total']:.0f} cycles, "
                       f"{meta['cycles_npu']:.0f} on the NPU; SRAM used {meta['sram_used_bytes'] / 1024:.1f} KiB, "
                       f"off-chip traffic {meta['offchip_traffic_bytes'] / 1024:.1f} KiB per inference; "
                       f"{meta['cpu_operators']} operator(s) left to the CPU; int8 ranges from "
                       f"{meta['calibration']} inputs")
        if meta.get("onchip"):
            from hwopt.estimator.memory import describe_split

            detail += (f"; kernels {meta['kernel_sum_us'] / 1000:.3f} ms + memory "
                       f"{meta['memory_charge_us'] / 1000:.3f} ms ({describe_split(meta['onchip'])})")
        hardware = f" [{meta['hardware_class']}]" if meta.get("hardware_class") else ""
        stdout.print(f"{paths[0]} on {result.target}{hardware}: {result.latency_us / 1000:.3f} ms{detail}",
                     markup=False, highlight=False)
