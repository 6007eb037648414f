"""An in-context measurements table: kernels priced inside whole models, not compiled alone.

Where the ground truth schedules across layers (Vela: cascading, weight buffering, tensors kept in SRAM),
a kernel compiled alone is not what it costs in a model. ``in_context_rows`` compiles whole models
(``hwopt.backends.IN_CONTEXT_MEASURERS``), gives each scheduled kernel its share of the model's time
(``hwopt.backends.vela_context``), and makes one table row per kernel descriptor: the **mean** of its
in-model figures over every occurrence in every model (a mean, not a median, because the estimator sums
kernels and a sum of means is the sum over the models). The rows have the table's usual form
(``docs/measurements.md``), so ``hwopt train`` learns from them as from a sweep.

A kernel with no NPU row of its own costs 0 inside its model (see ``vela_context``); a descriptor that
is 0 in every occurrence gets the floor of one NPU cycle, because a row must be positive to be learnt
(``hwopt.estimator.train.usable``) and the estimator should learn that such a kernel is nearly free,
not fall back to a lone-kernel figure. Off-chip traffic per layer is not in Vela's per-layer report in
bytes, so ``dram_bytes`` is empty.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hwopt.analysis.kernel import Kernel
from hwopt.backends.base import Measurement
from hwopt.targets import Target

FLOOR_US = 1e-3  # about one NPU cycle (Ethos-U clocks are 0.5-1 GHz)
ModelProgress = Callable[[str, int, int], None]


def in_context_rows(models: Sequence[str | Path], target: Target, progress: ModelProgress | None = None,
                    failed: list[tuple[str, str]] | None = None) -> tuple[list[Measurement], list]:
    """(one row per kernel descriptor, each model's ``ModelInContext``) over ``models`` compiled whole.

    A model the backend or the writer refuses (HwoptError) is skipped and listed in ``failed`` as
    (model, why), so one odd model does not stop a long profile.
    """
    from hwopt.backends import in_context_measurer
    from hwopt.errors import HwoptError

    measure = in_context_measurer(target)
    figures: dict[Kernel, list[float]] = defaultdict(list)
    sources: dict[Kernel, set[str]] = defaultdict(set)
    no_row: dict[Kernel, int] = defaultdict(int)
    done = []
    for i, model in enumerate(models):
        if progress is not None:
            progress("compiling whole models", i, len(models))
        try:
            result = measure(model, target)
        except HwoptError as exc:
            if failed is None:
                raise
            failed.append((str(model), str(exc)))
            continue
        done.append(result)
        for k in result.kernels:
            if k.kernel.kind in ("view", "unknown"):
                continue
            figures[k.kernel].append(k.latency_us)
            sources[k.kernel].add(result.name)
            no_row[k.kernel] += int(k.no_row)
    if progress is not None:
        progress("compiling whole models", len(models), len(models))
    rows = []
    for kernel, values in figures.items():
        mean = float(np.mean(values))
        meta = {"in_context": True, "occurrences": len(values), "models": len(sources[kernel]),
                "min_us": round(min(values), 4), "max_us": round(max(values), 4), "no_row": no_row[kernel],
                "source": sorted(sources[kernel])[:3]}
        if mean <= 0:
            meta["floor"] = True
        rows.append(Measurement(kernel, mean if mean > 0 else FLOOR_US, None, target.backend, meta))
    return rows, done
