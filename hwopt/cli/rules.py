"""``hwopt rules``: the rewrite rules: what they do, their parameters, whether they are exact."""

from __future__ import annotations

from hwopt.cli.app import app
from hwopt.cli.common import stdout, user_errors


@app.command()
def rules() -> None:
    """The rewrite rules: what they do, their parameters, whether they are exact."""
    with user_errors():
        from hwopt.report.tables import print_rules

        print_rules(stdout)
