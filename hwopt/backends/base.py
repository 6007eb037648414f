"""What every measurement backend produces, and the measurements table on disk.

A backend measures ``Kernel`` descriptors (see ``hwopt.kernels``) on one
target and returns one ``Measurement`` per kernel. Tables are CSV (optionally
gzip-compressed, by the ``.gz`` suffix) with one row per measurement: the
kernel's fields (``Kernel`` dataclass field names), then ``latency_us``,
``dram_bytes`` (off-chip traffic, empty where the backend cannot see it),
``backend`` and ``meta`` (a JSON object: machine, library versions, threads,
repeats, ...). Column order is fixed by ``TABLE_COLUMNS``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

from hwopt.errors import HwoptError
from hwopt.kernels import Kernel

# A table holds kernels as measured alone: the in-model layout-conversion flags are not columns.
_IN_MODEL_FIELDS = ("reorder_in", "reorder_out")
KERNEL_COLUMNS = tuple(f.name for f in fields(Kernel) if f.name not in _IN_MODEL_FIELDS)
TABLE_COLUMNS = KERNEL_COLUMNS + ("latency_us", "dram_bytes", "backend", "meta")

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


def _open_text(path: Path, mode: str):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding="utf-8", newline="")
    return open(path, mode, encoding="utf-8", newline="")


def read_table(path: str | Path) -> list[Measurement]:
    path = Path(path)
    if not path.is_file():
        raise HwoptError(f"{path}: no such measurements table")
    try:
        with _open_text(path, "r") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("kind", "cin", "cout", "latency_us") if c not in (reader.fieldnames or [])]
            if missing:
                raise HwoptError(f"{path}: not a measurements table (missing column {missing[0]!r})")
            out = []
            for line, row in enumerate(reader, 2):
                try:
                    dram = row.get("dram_bytes") or ""
                    out.append(Measurement(
                        kernel_from_row(row), float(row["latency_us"]), float(dram) if dram else None,
                        row.get("backend", ""), json.loads(row["meta"]) if row.get("meta") else {},
                    ))
                except (ValueError, TypeError, json.JSONDecodeError) as exc:
                    raise HwoptError(f"{path}:{line}: bad row ({exc})") from None
            return out
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise HwoptError(f"{path}: cannot read the table ({exc})") from None


def write_table(path: str | Path, measurements: Iterable[Measurement], append: bool = False) -> None:
    """Write (or append to) a table; gzip when the name ends in .gz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not append or not path.exists() or path.stat().st_size == 0
    with _open_text(path, "a" if append else "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
        if new_file:
            writer.writeheader()
        for m in measurements:
            writer.writerow(m.row())
