"""hwopt's cache: where it is, an unwritable one as one line (exit 2), the emulator env built once under a lock,
and `profile` never writing into the installed package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hwopt.backends.scalesim_env import _MARKER, REQUIREMENTS, venv_dir, venv_python
from hwopt.io.cache import cache_root, locked

REPO = Path(__file__).resolve().parents[2]


def test_cache_root_honours_hwopt_cache_then_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HWOPT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "hwopt"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert cache_root() == tmp_path / "home" / ".cache" / "hwopt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "hwopt"
    monkeypatch.setenv("HWOPT_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine" and venv_dir() == tmp_path / "mine" / "scalesim-venv"


def _without_root_powers() -> list[str]:
    """A prefix that makes a read-only folder read-only for this user (root ignores the mode bits)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made read-only for the test")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


@pytest.mark.parametrize("variable", ["HWOPT_CACHE", "XDG_CACHE_HOME", "HOME"])
def test_an_unwritable_cache_is_one_line_and_exit_2_before_any_work(tmp_path: Path, variable: str) -> None:
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    env = {k: v for k, v in os.environ.items() if k not in ("HWOPT_CACHE", "XDG_CACHE_HOME")}
    env[variable] = str(readonly)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        done = subprocess.run([*_without_root_powers(), sys.executable, "-m", "hwopt.cli", "profile", "--target",
                               "npu32", "--count", "1", "-o", str(tmp_path / "t.csv")], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        readonly.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"in {readonly}" in done.stderr and "Permission denied" in done.stderr
    assert "set HWOPT_CACHE (or XDG_CACHE_HOME) to a writable folder" in done.stderr
    assert {"HWOPT_CACHE": "from HWOPT_CACHE", "XDG_CACHE_HOME": "from XDG_CACHE_HOME",
            "HOME": "the default"}[variable] in done.stderr
    assert not (tmp_path / "t.csv").exists()


# Builds "something" slowly under build_once: a cheap creator, run by real concurrent processes.
_BUILDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from hwopt.io.cache import build_once
    folder = Path(sys.argv[1])
    def build():
        with open(folder.parent / "builds.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        folder.mkdir()
        time.sleep(1.5)
        (folder / "ready").write_text("yes")
    build_once(folder, lambda: (folder / "ready").is_file(), build, "a test thing")
    print((folder / "ready").read_text())
""")


def test_two_first_runs_at_once_build_once_and_the_second_waits(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "thing"
    runs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(folder)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert [out for out, _ in outputs] == ["yes\n", "yes\n"]
    assert len((tmp_path / "cache" / "builds.log").read_text().split()) == 1  # built once
    waited = [err for _, err in outputs if "waiting for another process" in err]
    assert len(waited) == 1 and str(folder) in waited[0]


def test_the_emulator_env_is_created_under_the_lock_and_a_waiting_run_uses_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    root = cache / "scalesim-venv"
    cache.mkdir()
    env = {**os.environ, "HWOPT_CACHE": str(cache), "PIP_NO_INDEX": "1"}  # never downloads, even when broken
    with locked(cache / "scalesim-venv.lock"):  # as a first run creating the environment holds it
        waiting = subprocess.Popen([sys.executable, "-m", "hwopt.backends.scalesim_env"], cwd=REPO, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = waiting.stderr.readline()
        assert "waiting for another process to finish creating SCALE-Sim's environment" in line, line
        # The "first run" completes its environment (a python and the ready marker) and lets go.
        python = venv_python(root)
        python.parent.mkdir(parents=True)
        python.symlink_to(sys.executable)
        (root / _MARKER).write_text("\n".join(REQUIREMENTS))
        started = time.monotonic()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert out.strip() == str(python) and time.monotonic() - started < 30
    assert python.is_symlink()  # used as it was, not rebuilt


def test_profile_does_not_write_into_the_installed_package(tmp_path: Path) -> None:
    from tests.backends.test_table_file import _table_target, _tiny_model

    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.estimator.profile import sweep

    shipped = REPO / "estimator" / "cpu"
    before = sorted(p.name for p in shipped.iterdir())
    done = subprocess.run([sys.executable, "-m", "hwopt.cli", "profile", "--target", "cpu", "--count", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "give -o" in done.stderr
    assert sorted(p.name for p in shipped.iterdir()) == before
    # A target file of the user's own: the table goes beside it, where its table backend reads it.
    model = _tiny_model(tmp_path / "tiny.onnx")
    target = _table_target(tmp_path, sweep(8, [load_canonical(model, [])[1]], examples=False))
    mine = subprocess.run([sys.executable, "-m", "hwopt.cli", "profile", "--target", str(target), "--no-examples",
                           "--from", str(model), "--count", "5"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert mine.returncode == 0, mine.stderr
    assert f"5 rows in {tmp_path / 'measurements.csv.gz'}" in mine.stdout.replace("\n", "")
