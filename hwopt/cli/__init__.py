"""Stage 11, the ``hwopt`` command line (typer): one module per command; the commands parse and print.

Exit codes: 0 success; 2 bad input or an impossible request (one line on
stderr, input files never written); 3 an internal error (one line; set
HWOPT_DEBUG=1 for the traceback).
"""

from __future__ import annotations

# Importing a command module registers its command on the app; --help lists them in this order.
from hwopt.cli import inspect, rules, apply, targets, profile, measure, optimize, recover, estimate, train  # noqa: F401,I001
from hwopt.cli.app import app
from hwopt.cli.common import show_warning


def _terminate(signum, frame) -> None:
    # A kill (SIGTERM) unwinds like Ctrl-C: the atomic writes' finally clauses remove their temporaries.
    raise KeyboardInterrupt


def main() -> None:
    import signal
    import warnings

    warnings.showwarning = show_warning
    signal.signal(signal.SIGTERM, _terminate)
    app()
