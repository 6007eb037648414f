"""Reading the TOML files an expert edits (rule sets, targets) with one-line errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from hwopt.errors import HwoptError


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The parsed file, or HwoptError naming ``what`` it should have been ("rule file", "target file")."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HwoptError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise HwoptError(f"{path}: is a directory, not a {what}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HwoptError(f"{path}: not a valid TOML {what} ({exc})") from None
    bad = _non_finite(data)
    if bad is not None:
        raise HwoptError(f"{path}: {bad[0]} = {bad[1]}: every number in a {what} must be finite")
    return data


def _non_finite(value: Any, where: str = "") -> tuple[str, float] | None:
    """(dotted key, value) of the first NaN or Inf in parsed TOML (TOML spells them nan, inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "a value", value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where and isinstance(key, str) else
                            f"{where}[{key}]" if where else str(key))
        if found is not None:
            return found
    return None
