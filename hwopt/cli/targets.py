"""``hwopt targets``: the shipped targets: parallelism P, dtype, measurement backend."""

from __future__ import annotations

from hwopt.cli.app import app
from hwopt.cli.common import stdout, user_errors


@app.command()
def targets() -> None:
    """The shipped targets: parallelism P, dtype, measurement backend."""
    with user_errors():
        from rich.table import Table

        from hwopt.targets import load_target, shipped_targets

        table = Table("target", "P", "dtype", "backend", "description")
        for name in shipped_targets():
            t = load_target(name)
            table.add_row(t.name, str(t.parallelism), t.dtype, t.backend, t.description)
        stdout.print(table)
