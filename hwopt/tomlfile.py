"""Reading the TOML files an expert edits (rule sets, targets) with one-line errors."""

from __future__ import annotations

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
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HwoptError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise HwoptError(f"{path}: is a directory, not a {what}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HwoptError(f"{path}: not a valid TOML {what} ({exc})") from None
