"""The isolated Python environment that runs SCALE-Sim.

SCALE-Sim 3.0.0 (PyPI ``scalesim``, MIT) does not run under numpy 2 (it
converts 1-element arrays to Python scalars in
``memory/double_buffered_scratchpad_mem.py``), while hwopt itself runs on
numpy 2. So SCALE-Sim lives in its own virtual environment, created on
demand, and hwopt only talks to it through a subprocess running
``scalesim_worker.py`` (see ``hwopt.backends.scalesim``); it is never
imported into hwopt's own interpreter.

Location: ``scalesim-venv`` in hwopt's cache (``hwopt.io.cache``: ``$HWOPT_CACHE``, else
``$XDG_CACHE_HOME/hwopt``, else ``~/.cache/hwopt``). It is created under a lock
(``scalesim-venv.lock`` beside it): a second first run waits for the first and
then uses its environment.

Only the packages on SCALE-Sim's simulation path are installed, pinned:
``scalesim`` itself with ``--no-deps`` plus numpy and tqdm. Its declared
dependencies also list pandas, matplotlib, numba, cython and absl-py, which
only its plotting/report utilities use; skipping them keeps the environment
small (about 105 MB, pip included) and its creation short (about 10 s).

CI creates the environment with ``python -m hwopt.backends.scalesim_env``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

from hwopt.io.cache import build_once, cache_root
from hwopt.errors import HwoptError

SCALESIM_VERSION = "3.0.0"
# Pinned: the simulation path imports only numpy and tqdm (checked in scalesim 3.0.0's sources).
REQUIREMENTS = (f"scalesim=={SCALESIM_VERSION}", "numpy==1.26.4", "tqdm==4.67.1")
_MARKER = "hwopt-scalesim-ready.txt"


def venv_dir() -> Path:
    return cache_root() / "scalesim-venv"


def venv_python(root: Path | None = None) -> Path:
    root = root or venv_dir()
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def is_ready(root: Path | None = None) -> bool:
    """True when the environment exists and was completed with the current pins."""
    root = root or venv_dir()
    marker = root / _MARKER
    return venv_python(root).exists() and marker.is_file() and marker.read_text() == "\n".join(REQUIREMENTS)


def _pip(python: Path, args: list[str], quiet: bool) -> None:
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit code {result.returncode}"
        raise HwoptError(f"cannot install SCALE-Sim's environment (pip {' '.join(args[-3:])}): {last}")
    if not quiet:
        print(f"  pip install {' '.join(args)}: ok", file=sys.stderr)


def ensure_env(quiet: bool = True) -> Path:
    """The SCALE-Sim environment's python, creating the environment first if needed (once, under a lock)."""
    root = venv_dir()
    build_once(root, lambda: is_ready(root), lambda: _create(root, quiet), "SCALE-Sim's environment")
    return venv_python(root)


def _create(root: Path, quiet: bool) -> None:
    # Said even when quiet: the first npu32 measurement otherwise sits silent for a minute or more.
    print(f"hwopt: building the SCALE-Sim emulator's environment in {root} (once: about a minute and ~150 MB; "
          f"python -m hwopt.backends.scalesim_env builds it ahead)", file=sys.stderr)
    # clear=True: a half-made environment (interrupted pip) is rebuilt, never trusted.
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
    except OSError as exc:
        raise HwoptError(f"cannot create SCALE-Sim's environment in {root} ({exc.strerror or exc}): set "
                         "HWOPT_CACHE (or XDG_CACHE_HOME) to a writable folder with ~150 MB free") from None
    python = venv_python(root)
    scalesim, *others = REQUIREMENTS
    _pip(python, list(others), quiet)
    # --no-deps: see the module docstring (plotting-only dependencies are skipped on purpose).
    _pip(python, ["--no-deps", scalesim], quiet)
    check = subprocess.run([str(python), "-c", "import scalesim.scale_sim, numpy; print(numpy.__version__)"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        raise HwoptError(f"SCALE-Sim's environment in {root} does not import scalesim: {last}")
    (root / _MARKER).write_text("\n".join(REQUIREMENTS))
    if not quiet:
        print(f"SCALE-Sim {SCALESIM_VERSION} ready (numpy {check.stdout.strip()}): {python}", file=sys.stderr)


def main() -> int:
    try:
        print(ensure_env(quiet=False))
    except HwoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
