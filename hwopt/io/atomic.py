"""Writing a file whole or not at all: every file hwopt writes for the user goes through here.

The content goes to a temporary next to the target, which then replaces it in one rename: a kill or a
full disk leaves the old file (or none), never a truncated one. The temporary is removed on any error
(and on SIGTERM, which the CLI turns into an exception); one left by a SIGKILL is recognisably ours
(``NAME.hwopt-HOST-PID-RANDOM.tmp``) and removed by the next write to the same target once that
process is gone. The result gets the umask's permissions, like any file a program creates.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path
from typing import BinaryIO, Callable

from hwopt.errors import HwoptError

_TEMPORARY = re.compile(r"\.hwopt-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


def temporary_name(target: Path, pid: int | None = None, host: str | None = None) -> str:
    """The name of a temporary for ``target`` (in its directory), owned by this process."""
    host = (host or socket.gethostname()).replace("/", "_")
    return f"{target.name}.hwopt-{host}-{os.getpid() if pid is None else pid}-{secrets.token_hex(4)}.tmp"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete temporaries for ``target`` left by dead processes of this host; returns them."""
    host = socket.gethostname().replace("/", "_")
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(target.name + ".hwopt-"):
            continue
        match = _TEMPORARY.search(entry.name[len(target.name):])
        if match is None or match["host"] != host or _running(int(match["pid"])):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def umask_mode() -> int:
    """The mode a new regular file gets from the umask (0o666 minus its bits)."""
    try:  # Linux says it without changing it (setting it to read it races with other threads)
        with open("/proc/self/status", encoding="ascii") as status:
            current = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        current = os.umask(0)
        os.umask(current)
    return 0o666 & ~current


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace(target: Path, fill: Callable[[Path], None]) -> Path:
    """``fill(temporary)`` next to ``target``, synced, given the umask's mode, renamed over ``target``
    (the rename made durable too)."""
    remove_stale_temporaries(target)
    temporary = target.parent / temporary_name(target)
    try:
        open(temporary, "xb").close()
        fill(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, umask_mode())
        os.replace(temporary, target)
        _fsync_folder(target.parent)
    except OSError as exc:
        raise HwoptError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        if temporary.exists():
            temporary.unlink()
    return target


def atomic_write(target: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temporary next to ``target``, then rename it over ``target``.

    OSErrors (full disk, permissions) become one HwoptError line; nothing is left behind.
    """
    def fill(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            write(handle)

    return _replace(Path(target), fill)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """``atomic_write`` of a UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(target, lambda handle: handle.write(data))


def atomic_save(target: str | os.PathLike, save: Callable[[str], None]) -> Path:
    """``atomic_write`` for writers that take a path (``onnx.save_model``): ``save(temporary path)``."""
    return _replace(Path(target), lambda temporary: save(str(temporary)))
