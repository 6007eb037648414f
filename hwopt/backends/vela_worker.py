"""A long-lived Vela process: many compiles through ``ethosu.vela.vela.main`` without a new Python each.

A Vela compile of one kernel takes ~0.1 s; starting a Python and importing Vela for it took ~0.7-1.4 s
more. ``VelaWorker`` keeps one child process that imports Vela once and compiles request after request
(``main(argv)`` in the child's working folder, Python-level stdout captured for the operator counts).
It is still a child process, so a crash or a hang of Vela's C++ core cannot take hwopt down: a crash
is the request's failure (and the next request starts a new child); a hang past ``timeout_s`` kills
the child. The child runs with ``PYTHONHASHSEED=0`` like the one-shot subprocess, and its figures are
the subprocess's (tests/backends/test_vela_backend.py compares them).

Protocol: one JSON line per request on the child's stdin (``{"argv": [...], "cwd": folder}``), one JSON
line per answer (``{"rc": int, "stdout": str, "error": str}``) on a pipe the child keeps for itself;
its fd 1, where Vela's C++ core may print, goes to /dev/null. This file runs as a script (``python
vela_worker.py``), so the child imports Vela but not hwopt.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import selectors
import subprocess
import sys
import threading
from typing import Any, Sequence


class VelaWorkerError(RuntimeError):
    """The child died or hung; the message says which."""


class VelaWorker:
    """One child process compiling with Vela, request after request (not thread-safe: one per thread)."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self.process: subprocess.Popen | None = None
        self.compiles = 0

    def _start(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([self.python, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                            env={**os.environ, "PYTHONHASHSEED": "0"}, bufsize=0)
        return self.process

    def compile(self, argv: Sequence[str], cwd: str, timeout_s: float) -> dict[str, Any]:
        """Vela's ``main(argv)`` run in ``cwd`` by the child: ``{"rc", "stdout", "error"}``."""
        process = self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write((json.dumps({"argv": list(argv), "cwd": cwd}) + "\n").encode())
            process.stdin.flush()
        except OSError:
            self.close()
            raise VelaWorkerError("the Vela worker process had died") from None
        line = self._read_line(process, timeout_s)
        self.compiles += 1
        return json.loads(line)

    def _read_line(self, process: subprocess.Popen, timeout_s: float) -> bytes:
        chunks: list[bytes] = []
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            import time

            deadline = time.monotonic() + timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.close()
                    raise VelaWorkerError(f"timeout after {timeout_s:g} s")
                chunk = os.read(process.stdout.fileno(), 1 << 16)
                if not chunk:  # EOF: the child crashed (a C++ abort, a signal)
                    code = process.wait()
                    self.process = None
                    raise VelaWorkerError(f"Vela crashed (exit {code})")
                chunks.append(chunk)
                if chunk.endswith(b"\n"):
                    return b"".join(chunks)

    def close(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None


_LOCAL = threading.local()


def shared_worker() -> VelaWorker:
    """This thread's worker, started on first use and killed at exit."""
    worker = getattr(_LOCAL, "worker", None)
    if worker is None:
        worker = _LOCAL.worker = VelaWorker()
        atexit.register(worker.close)
    return worker


def _serve() -> None:
    """The child's loop: requests on stdin, answers on a private copy of fd 1."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # whatever Vela's C++ core prints cannot corrupt the answers
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    from ethosu.vela.vela import main

    for line in sys.stdin:
        request = json.loads(line)
        captured, rc, error = io.StringIO(), 1, ""
        try:
            os.chdir(request["cwd"])
            with contextlib.redirect_stdout(captured):
                rc = int(main(request["argv"]) or 0)
        except SystemExit as exc:  # argparse's parser.error
            rc = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # Vela's own errors are the request's failure, not the worker's
            error = f"{type(exc).__name__}: {exc}"
        answers.write(json.dumps({"rc": rc if not error else 1, "stdout": captured.getvalue(),
                                  "error": error}) + "\n")


if __name__ == "__main__":
    _serve()
