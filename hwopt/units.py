"""Reading a number with a unit ('4MiB', '2.5ms', '10m'): the one grammar every budget option shares."""

from __future__ import annotations

import re

_QUANTITY = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Zµ]*)\s*")


def split_quantity(text: str | None) -> tuple[float, str] | None:
    """'3.5 MB' -> (3.5, 'mb'); None when the text is not a plain positive number with an optional unit."""
    match = _QUANTITY.fullmatch(text or "")
    return (float(match.group(1)), match.group(2).lower()) if match else None
