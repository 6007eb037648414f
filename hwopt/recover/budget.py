"""Reading a recovery time budget (``--recover-time 10m``); no torch needed."""

from __future__ import annotations

from hwopt.errors import HwoptError
from hwopt.units import split_quantity

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'10m', '90s', '1.5h', '600' (seconds) -> seconds."""
    quantity = split_quantity(text)
    if quantity is None or quantity[1] not in _UNITS or quantity[0] <= 0:
        raise HwoptError(f"bad duration {text!r}: expected a positive number with an optional unit (s, m, h), e.g. 10m")
    return quantity[0] * _UNITS[quantity[1]]
