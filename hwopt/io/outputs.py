"""Checking a command's output paths before any work: never an input, never each other, writable.

Every command that writes files names them up front (``-o``, ``--report``, ``--save-rules``, ...);
``check_outputs`` refuses, with one line, an output that is an input or one of the files an input
consists of (a model's external data), two flags naming one file, a directory, or a place that
cannot be written (the directory is created first, as writing would). Paths are compared resolved:
``a/../b``, symlinks and hard-to-see aliases of one file count as the same file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from hwopt.errors import HwoptError


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The external-data files an ONNX file at ``path`` names (next to it); [] when it cannot be read."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    path = Path(path)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not readable: load_model says why, later
        return []
    files = []
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location:
                files.append(path.parent / location)
    return list(dict.fromkeys(files))


def model_files(model: Path) -> list[Path]:
    """A model file and the external-data files it names."""
    return [model] + external_data_files(model)


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_not_input(path: Path, inputs: list[Path], flag: str | None = None) -> None:
    """``flag``: the option that named ``path`` (``-o``, ``--report``), said so the user knows what to change."""
    for source in inputs:
        if _same(Path(path), Path(source)):
            where = f"give {flag} another path" if flag else f"choose another path for {path}"
            raise HwoptError(f"refusing to overwrite the input {source}: {where}")


def _writable_directory(path: Path) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise HwoptError(f"cannot write {path}: {exc.strerror or exc} ({folder})") from None


def check_outputs(outputs: dict[str, Path | None], inputs: list[Path]) -> None:
    """``outputs``: flag -> path (None: not asked for). Raises HwoptError on the first problem."""
    named = {flag: Path(path) for flag, path in outputs.items() if path is not None}
    # A model may be written with its weights in MODEL.data next to it (large, or external in the input).
    data = {f"{flag}'s external data": path.with_name(path.name + ".data") for flag, path in named.items()
            if flag.split()[0] == "-o"}
    seen: list[tuple[str, Path]] = []
    for flag, path in {**named, **data}.items():
        check_not_input(path, inputs, flag)
        for other_flag, other in seen:
            if _same(path, other):
                raise HwoptError(f"{other_flag} and {flag} name the same file {path}: give each its own")
        seen.append((flag, path))
        if flag not in named:
            continue
        if path.is_dir():
            raise HwoptError(f"{flag} {path} is a directory: give a file name")
        _writable_directory(path)


def check_output_folder(flag: str, folder: Path, inputs: list[Path]) -> None:
    """An output that is a folder of files (``train -o``): not an input, not a file, writable."""
    folder = Path(folder)
    check_not_input(folder, inputs, flag)
    if folder.exists() and not folder.is_dir():
        raise HwoptError(f"{flag} {folder} is a file, not a folder: give a folder to write into")
    _writable_directory(folder / "probe")
