"""The ``hwopt`` Typer application; each command module registers itself on it."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Make ONNX vision models fast on neural accelerators with curated, verified rewrites.")


def _version(value: bool) -> None:
    if value:
        from hwopt import __version__

        print(f"hwopt {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Make ONNX vision models fast on neural accelerators with curated, verified rewrites."""
