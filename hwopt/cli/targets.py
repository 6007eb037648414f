"""``hwopt targets``: the shipped targets: parallelism P, dtype, hardware class, memory budget, backend."""

from __future__ import annotations

from hwopt.cli.app import app
from hwopt.cli.common import stdout, user_errors


@app.command()
def targets() -> None:
    """The shipped targets: parallelism P, dtype, hardware class, memory budget, measurement backend."""
    with user_errors():
        from rich.table import Table

        from hwopt.targets import load_target, shipped_targets

        table = Table("target", "P", "dtype", "class", "on-chip budget", "backend", "description")
        for name in shipped_targets():
            t = load_target(name)
            budget = (f"{t.memory_budget_bytes / 2**20:g} MiB" + (", DRAM beyond" if t.offchip_bytes_per_us else "")
                      if t.memory_budget_bytes else "none")
            hardware = t.class_name if t.backend == "scalesim" else "the device's own"
            table.add_row(t.name, str(t.parallelism), t.dtype, hardware, budget, t.backend, t.description)
        stdout.print(table)
