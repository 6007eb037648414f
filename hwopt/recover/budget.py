"""Reading a recovery time budget (``--recover-time 10m``); no torch needed."""

from __future__ import annotations

import re

from hwopt.errors import HwoptError

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'10m', '90s', '1.5h', '600' (seconds) -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text or "")
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise HwoptError(f"bad duration {text!r}: expected a positive number with an optional unit (s, m, h), e.g. 10m")
    return float(match.group(1)) * _UNITS[unit]
