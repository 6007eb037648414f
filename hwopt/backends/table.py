"""The ``table`` backend: answers from measurements taken elsewhere (a user's own device).

A user times kernels on their device with whatever tool they have, writes the
CSV described in ``docs/measurements.md`` (the schema of ``hwopt.backends.base``),
and imports it with ``hwopt profile --backend table FILE``. Import validates
every row (one-line error naming the file and line), merges repeated
measurements of the same kernel by their median, and writes the standard
table. ``TableBackend`` then answers ``measure`` by lookup: a kernel missing
from the table is an error, never a guess (view kernels cost 0, as everywhere).
"""

from __future__ import annotations

from dataclasses import replace

import math
import statistics
from pathlib import Path
from typing import Sequence

from hwopt.backends.base import Measurement, Progress
from hwopt.backends.table_file import read_table, write_table
from hwopt.errors import HwoptError
from hwopt.analysis.kernel import CONV_KINDS, KINDS, Kernel

NAME = "table"
DEFAULT_TABLE = "measurements.csv.gz"
_POSITIVE = ("cin", "cout", "h", "w", "out_h", "out_w", "kernel", "kw", "stride", "groups", "inputs", "batch")


def check_measurement(m: Measurement) -> str | None:
    """Why this row cannot be used, or None when it is sound."""
    k = m.kernel
    if k.kind not in KINDS or k.kind == "unknown":
        return f"kind {k.kind!r} is not one of {', '.join(x for x in KINDS if x != 'unknown')}"
    for name in _POSITIVE:
        if getattr(k, name) < 1:
            return f"{name} must be >= 1 (got {getattr(k, name)})"
    if k.dtype_bytes not in (1, 2, 4, 8):
        return f"dtype_bytes must be 1, 2, 4 or 8 (got {k.dtype_bytes})"
    if k.kind in CONV_KINDS and (k.cin % k.groups or k.cout % k.groups):
        return f"channels {k.cin}->{k.cout} are not divisible by groups {k.groups}"
    if k.kind == "dwconv" and k.groups != k.cin:
        return f"a dwconv needs groups == cin (got groups {k.groups}, cin {k.cin})"
    if k.kind == "conv" and k.groups != 1:
        return f"a conv has groups 1 (got {k.groups}; use kind gconv or dwconv)"
    if not math.isfinite(m.latency_us) or m.latency_us < 0:
        return f"latency_us must be a finite number >= 0 (got {m.latency_us})"
    if m.latency_us == 0 and k.kind != "view":
        return "latency_us is 0 for a kernel that does work (only view kernels cost 0)"
    if m.dram_bytes is not None and (not math.isfinite(m.dram_bytes) or m.dram_bytes < 0):
        return f"dram_bytes must be empty or a finite number >= 0 (got {m.dram_bytes})"
    return None


def load_checked(path: str | Path) -> list[Measurement]:
    """Read a user's table; the first unusable row is a one-line error with its line number."""
    rows = read_table(path)
    if not rows:
        raise HwoptError(f"{path}: the table has no rows")
    for line, m in enumerate(rows, 2):  # line 1 is the header
        problem = check_measurement(m)
        if problem:
            raise HwoptError(f"{path}:{line}: bad row ({problem})")
    return rows


def merge_repeats(rows: Sequence[Measurement]) -> list[Measurement]:
    """One measurement per kernel: repeated ones merged by their median latency (first one's meta)."""
    groups: dict[Kernel, list[Measurement]] = {}
    for m in rows:
        groups.setdefault(m.kernel, []).append(m)
    merged = []
    for kernel, ms in groups.items():
        first = ms[0]
        if len(ms) == 1:
            merged.append(first)
            continue
        drams = [m.dram_bytes for m in ms if m.dram_bytes is not None]
        merged.append(Measurement(kernel, statistics.median(m.latency_us for m in ms),
                                  statistics.median(drams) if drams else None, first.backend,
                                  {**first.meta, "merged_rows": len(ms)}))
    return merged


def import_table(source: str | Path, output: str | Path) -> list[Measurement]:
    """Validate ``source``, merge repeats and write the standard table to ``output``."""
    if Path(source).resolve() == Path(output).resolve():
        raise HwoptError(f"refusing to overwrite the input {source}: choose another -o path")
    rows = merge_repeats(load_checked(source))
    rows = [Measurement(m.kernel, m.latency_us, m.dram_bytes, m.backend or NAME, m.meta) for m in rows]
    write_table(output, rows)
    return rows


def default_table(target) -> Path:
    """The target's table: ``backend_settings.table`` (relative to the target file) or measurements.csv.gz."""
    name = target.backend_settings.get("table", DEFAULT_TABLE)
    path = Path(name)
    return path if path.is_absolute() or target.path is None else target.folder / path


class TableBackend:
    """Answers ``measure`` from an imported table (the Backend protocol)."""

    name = NAME

    def __init__(self, target=None, path: str | Path | None = None) -> None:
        if path is None:
            if target is None:
                raise HwoptError("a table backend needs a table path or a target")
            path = default_table(target)
        self.path = Path(path)
        self.rows = {m.kernel: m for m in merge_repeats(load_checked(self.path))}

    def measure(self, kernels: Sequence[Kernel], progress: Progress | None = None) -> list[Measurement]:
        kernels = [k.isolated() for k in kernels]  # the table holds kernels as measured alone
        # a table without the graph_input column (read as 0) still answers for a kernel that reads the input
        kernels = [replace(k, graph_input=0) if k.graph_input and k not in self.rows else k for k in kernels]
        missing = [k for k in kernels if k.kind != "view" and k not in self.rows]
        if missing:
            raise HwoptError(f"{self.path}: {len(set(missing))} kernel(s) not in the table, "
                             f"e.g. {missing[0].describe()} (measure them on the device and re-import)")
        out = []
        for index, kernel in enumerate(kernels):
            found = self.rows.get(kernel)
            out.append(found if found is not None else Measurement(kernel, 0.0, None, NAME, {"note": "view: cost 0"}))
            if progress is not None:
                progress(index + 1, len(kernels))
        return out
