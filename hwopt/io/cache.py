"""hwopt's cache folder, checked for writing, and building something in it once across processes.

Where: ``$HWOPT_CACHE``, else ``$XDG_CACHE_HOME/hwopt`` (an absolute path, per the XDG spec), else
``~/.cache/hwopt``. It holds what can be rebuilt: the SCALE-Sim environment and its per-layer results.
An unwritable location (a read-only home, a full disk) is one HwoptError line naming the folder and
how to choose another, raised before any long work.

``build_once`` creates something (the emulator's environment) under an exclusive ``flock`` on a lock
file beside it: two first runs at once do not both build into the same folder; the second waits
(saying so) and then uses what the first built.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from hwopt.errors import HwoptError

try:
    import fcntl
except ImportError:  # Windows: no lock (concurrent first runs are not serialised there)
    fcntl = None

_HOW = "set HWOPT_CACHE (or XDG_CACHE_HOME) to a writable folder"


def cache_root() -> Path:
    """hwopt's cache folder (not created here): HWOPT_CACHE, XDG_CACHE_HOME/hwopt or ~/.cache/hwopt."""
    override = os.environ.get("HWOPT_CACHE")
    if override:
        return Path(override).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: a relative value is invalid and ignored
        return Path(xdg) / "hwopt"
    return Path.home() / ".cache" / "hwopt"


def _source() -> str:
    if os.environ.get("HWOPT_CACHE"):
        return "from HWOPT_CACHE"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return "from XDG_CACHE_HOME" if xdg and Path(xdg).is_absolute() else "the default"


def writable_dir(path: Path, what: str = "hwopt's cache") -> Path:
    """``path``, created if needed and checked by writing a file in it; else one HwoptError line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise HwoptError(f"cannot write {what} in {path} ({reason}; {_source()}): {_HOW}") from None
    return path


def cache_dir(name: str) -> Path:
    """A writable folder ``name`` in hwopt's cache."""
    return writable_dir(cache_root() / name)


@contextmanager
def locked(lock_path: Path, waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created); print ``waiting`` once if another process holds it."""
    try:
        handle = open(lock_path, "a+b")
    except OSError as exc:
        raise HwoptError(f"cannot write the lock file {lock_path} ({exc.strerror or exc}): {_HOW}") from None
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting:
                    print(waiting, file=sys.stderr, flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(folder: Path, ready: Callable[[], bool], build: Callable[[], None], what: str) -> None:
    """Run ``build`` unless ``ready()``, holding ``<folder>.lock``; a second process waits, then finds it ready."""
    if ready():
        return
    writable_dir(folder.parent)
    waiting = f"hwopt: waiting for another process to finish creating {what} in {folder} ..."
    with locked(folder.with_name(folder.name + ".lock"), waiting):
        if not ready():  # whoever held the lock may have built it meanwhile
            build()
