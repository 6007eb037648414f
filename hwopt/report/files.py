"""``--report FILE``: the file's extension picks the format (.html, .md, .json), checked before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from hwopt.errors import HwoptError


def _html(kind: str, doc: dict[str, Any]) -> str:
    from hwopt.report.html import render

    return render(kind, doc)


def _markdown(kind: str, doc: dict[str, Any]) -> str:
    from hwopt.report.optimize import markdown

    return markdown(doc)


def _json(kind: str, doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


FORMATS: dict[str, tuple[Callable[[str, dict[str, Any]], str], tuple[str, ...]]] = {
    ".html": (_html, ("optimize", "apply", "estimate", "measure")),
    ".htm": (_html, ("optimize", "apply", "estimate", "measure")),
    ".md": (_markdown, ("optimize",)),
    ".json": (_json, ("optimize", "apply", "estimate", "measure")),
}


def check_report_path(path: Path | None, kind: str) -> None:
    """Exit-2 material before any long work: an extension this command cannot write."""
    if path is None:
        return
    suffix = path.suffix.lower()
    known = [ext for ext, (_, kinds) in FORMATS.items() if kind in kinds]
    if suffix not in known:
        raise HwoptError(f"--report {path}: the extension picks the format; {kind} writes {', '.join(known)}")
    if path.is_dir():
        raise HwoptError(f"--report {path}: is a folder")


def write_report(path: Path, kind: str, doc: dict[str, Any]) -> None:
    from hwopt.io.atomic import atomic_write_text

    render, _ = FORMATS[path.suffix.lower()]
    atomic_write_text(path, render(kind, doc))  # whole or not at all: a kill never leaves half a report
