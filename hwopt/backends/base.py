"""What every measurement backend produces, and the measurements table on disk.

A backend measures ``Kernel`` descriptors (see ``hwopt.analysis.kernels``) on one
target and returns one ``Measurement`` per kernel. Tables are CSV (optionally
gzip-compressed, by the ``.gz`` suffix) with one row per measurement: the
kernel's fields (``Kernel`` dataclass field names), then ``latency_us``,
``dram_bytes`` (off-chip traffic, empty where the backend cannot see it),
``backend`` and ``meta`` (a JSON object: machine, library versions, threads,
repeats, ...). Column order is fixed by ``TABLE_COLUMNS``. Reading and
(crash-safe) writing are in ``hwopt.backends.table_file``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Callable, Protocol, Sequence

from hwopt.analysis.kernel import Kernel

# A table holds kernels as measured alone: the in-model layout-conversion flags are not columns.
_IN_MODEL_FIELDS = ("reorder_in", "reorder_out")
KERNEL_COLUMNS = tuple(f.name for f in fields(Kernel) if f.name not in _IN_MODEL_FIELDS)
TABLE_COLUMNS = KERNEL_COLUMNS + ("latency_us", "dram_bytes", "backend", "meta")
# Kernel columns added after tables were first written, with the value a row of an older table means.
# Rows with that value may be appended to a table without the column.
LATER_COLUMNS = {"weight_zeros": "0", "dilation": "1", "graph_input": "0"}

Progress = Callable[[int, int], None]


@dataclass
class Measurement:
    kernel: Kernel
    latency_us: float
    dram_bytes: float | None = None
    backend: str = ""
    meta: dict = field(default_factory=dict)

    def row(self) -> dict[str, str]:
        row = {name: str(getattr(self.kernel, name)) for name in KERNEL_COLUMNS}
        row["latency_us"] = repr(float(self.latency_us))
        row["dram_bytes"] = "" if self.dram_bytes is None else repr(float(self.dram_bytes))
        row["backend"] = self.backend
        row["meta"] = json.dumps(self.meta, sort_keys=True)
        return row


class Backend(Protocol):
    """Measures kernels on one target."""

    name: str

    def measure(self, kernels: Sequence[Kernel], progress: Progress | None = None) -> list[Measurement]:
        """One measurement per kernel, in order."""
        ...


def kernel_from_row(row: dict[str, str]) -> Kernel:
    values = {}
    for f in fields(Kernel):
        if f.name in _IN_MODEL_FIELDS:
            continue
        raw = row.get(f.name)
        if raw is None or raw == "":
            continue
        values[f.name] = raw if f.type in ("str", str) else int(float(raw))
    return Kernel(**values)
