"""Executors: the local process pool and a real Ray cluster (a head and one more node on this machine).

The SCALE-Sim emulator is deterministic, so the same kernels profiled through
Ray and in this process must give the same rows; a Ray worker killed mid-batch
must still leave every kernel in the table exactly once; a killed driver
resumes from the table. Each test simulates into a fresh cache, so the
emulator really runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.backends.table_file import read_table
from hwopt.backends.scalesim_env import ensure_env, is_ready
from hwopt.executors import get_executor
from hwopt.analysis.kernel import Kernel
from hwopt.estimator.profile import coarse_to_fine, largest_first, profile_with
from hwopt.targets import load_target
from tests.backends.test_profile_cpu import fast_target  # noqa: F401 - the cut-down cpu target fixture

REPO = Path(__file__).resolve().parents[2]

# Small conv/dwconv layers: a fraction of a second each in SCALE-Sim.
KERNELS = [Kernel("conv", 8, 16, 8, 8, 8, 8), Kernel("conv", 16, 8, 8, 8, 4, 4, 3, 3, 2),
           Kernel("conv", 4, 32, 6, 6, 6, 6, 3, 3), Kernel("dwconv", 16, 16, 10, 10, 10, 10, 3, 3, groups=16),
           Kernel("conv", 12, 20, 9, 9, 9, 9, 3, 3), Kernel("eltwise", 16, 16, 8, 8, 8, 8, inputs=2, op="Add")]
# A little larger (~1-2 s each): long enough to kill a worker while it simulates.
SLOWER = [Kernel("conv", 32, 64, 20, 20, 20, 20, 3, 3), Kernel("conv", 48, 32, 18, 18, 18, 18, 3, 3),
          Kernel("conv", 40, 40, 16, 16, 16, 16, 3, 3), Kernel("conv", 64, 32, 14, 14, 14, 14, 3, 3)]


def _rows(path: Path) -> list[tuple]:
    return sorted((repr(m.kernel), m.latency_us, m.dram_bytes, m.backend, repr(sorted(m.meta.items())))
                  for m in read_table(path))


@pytest.fixture(scope="module")
def npu32():
    if not is_ready():
        pytest.skip("SCALE-Sim's environment is not built (python -m hwopt.backends.scalesim_env)")
    ensure_env()
    return load_target("npu32")


@pytest.fixture(scope="module")
def cluster(npu32):
    """A real Ray cluster on 127.0.0.1: a head (1 CPU) and one more node (1 CPU), shared by this module."""
    pytest.importorskip("ray")
    from hwopt.executors.ray_local import LocalRayCluster

    # The nodes' worker processes must import this checkout's hwopt (not another install).
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([old] if old else []))
    cluster = LocalRayCluster(head_cpus=1)
    try:
        cluster.add_worker(num_cpus=1)
        executor = get_executor("ray", address=cluster.address)
        cluster.cluster.wait_for_nodes()
        assert executor.slots == 2
        yield cluster, executor
        executor.close()
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.mark.slow  # starts a Ray cluster (31 s wall at load 25)
def test_ray_cluster_gives_the_local_rows(cluster, npu32, tmp_path: Path) -> None:
    handle, executor = cluster
    import ray

    # Loopback only: both nodes registered on 127.0.0.1 (every Ray server then binds there).
    assert handle.address.startswith("127.0.0.1:")
    assert [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]] == ["127.0.0.1"] * 2
    local = get_executor("local", jobs=1)
    here = profile_with(local, npu32, KERNELS, tmp_path / "local.csv",
                        backend_options={"cache_dir": str(tmp_path / "cache-local")})
    calls = []
    there = profile_with(executor, npu32, KERNELS, tmp_path / "ray.csv", batch=2,
                         backend_options={"cache_dir": str(tmp_path / "cache-ray")},
                         progress=lambda label, done, total: calls.append((done, total)))
    assert here.measured == there.measured == len(KERNELS) and not here.failed and not there.failed
    assert _rows(tmp_path / "ray.csv") == _rows(tmp_path / "local.csv")
    assert calls[0] == (0, len(KERNELS)) and calls[-1] == (len(KERNELS), len(KERNELS))
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)  # streamed batch by batch
    # Both nodes worked: every one-CPU node ran tasks (the tasks report no node, but both caches are one
    # folder here, so count the simulations instead: one per distinct array layer).
    assert len(list((tmp_path / "cache-ray").glob("*.json"))) == len(KERNELS) - 1


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _ours(pid: int) -> bool:
    """``pid`` descends from this test process (the cluster's nodes are its children): never another
    Ray cluster's worker on the same machine."""
    while pid > 1:
        pid = _parent(pid)
        if pid == os.getpid():
            return True
    return False


def _ray_workers_simulating() -> list[int]:
    """This cluster's Ray worker processes (``ray::...``) that have a SCALE-Sim worker process under them."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if "scalesim_worker.py" not in (entry / "cmdline").read_bytes().decode(errors="replace"):
                continue
            ppid = _parent(int(entry.name))
            if Path(f"/proc/{ppid}/cmdline").read_bytes().startswith(b"ray::") and _ours(ppid):
                found.append(ppid)
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow  # a sweep whose worker is killed (12 s wall at load 25)
def test_a_worker_killed_mid_batch_leaves_every_kernel_once(cluster, npu32, tmp_path: Path) -> None:
    _, executor = cluster
    out = tmp_path / "table.csv"
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for pid in _ray_workers_simulating():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one)
    killer.start()
    result = profile_with(executor, npu32, SLOWER, out, batch=2, backend_options={"cache_dir": str(tmp_path / "c")})
    killer.join()
    assert killed, "no Ray worker was caught simulating"
    rows = read_table(out)
    assert sorted(repr(m.kernel) for m in rows) == sorted(map(repr, SLOWER))  # each exactly once
    assert result.measured == len(SLOWER) and not result.failed
    assert all(m.latency_us > 0 and m.meta["model"] == "scalesim" for m in rows)


def test_largest_first_orders_by_emulation_work(npu32) -> None:
    ordered = largest_first(KERNELS, npu32)
    assert ordered[0] == Kernel("conv", 12, 20, 9, 9, 9, 9, 3, 3)  # 11x11 padded input x 12 x 20: the largest
    assert ordered[-1].kind == "eltwise"  # not simulated at all
    many = [Kernel("conv", 8, 8 + i, 8, 8, 8, 8) for i in range(11)]
    ranks = [largest_first(many, npu32).index(k) for k in coarse_to_fine(many, npu32)]
    assert ranks[:4] == [0, 5, 2, 8] and sorted(ranks) == list(range(11))  # the largest, then bisected


def _tiny_model(path: Path) -> Path:
    """conv 3->8 (3x3) + relu, conv 8->16 (1x1): a sweep of small kernels."""
    import numpy as np

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype("float32"), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 8, 1, 1)).astype("float32"), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_default_path_never_imports_ray(fast_target: Path, tmp_path: Path) -> None:  # noqa: F811
    model = _tiny_model(tmp_path / "tiny.onnx")
    code = ("import sys; from hwopt.cli import app; "
            f"app(['profile', '-t', {str(fast_target)!r}, '--no-examples', '--from', {str(model)!r}, '--count', '2', "
            f"'-o', {str(tmp_path / 't.csv')!r}, '-q'], standalone_mode=False); "
            "print('ray loaded' if 'ray' in sys.modules else 'no ray')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "no ray" and len(read_table(tmp_path / "t.csv")) == 2


@pytest.mark.slow  # a profile sweep killed and resumed (5 s of CPU)
def test_a_killed_driver_resumes_from_the_table(fast_target: Path, tmp_path: Path) -> None:  # noqa: F811
    model = _tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "table.csv"
    command = [sys.executable, "-m", "hwopt.cli", "profile", "-t", str(fast_target), "--no-examples", "--from",
               str(model), "--count", "12", "--batch", "1", "-o", str(out)]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and first.poll() is None:
        if out.exists() and len(out.read_text().splitlines()) >= 3:  # the header and two rows
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = len(read_table(out))
    assert 2 <= before < 12, "the first run was not stopped mid-sweep"
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert f"{12 - before} kernels measured, {before} already in the table; 12 rows" in second.stdout
    kernels = [repr(m.kernel) for m in read_table(out)]
    assert len(kernels) == len(set(kernels)) == 12
    # The log's last progress line: what this run had left, with its rate and time left.
    assert f"{12 - before}/{12 - before} kernels (100.0%)" in second.stderr
    assert re.search(r"\(100\.0%\), [\d.]+ kernels/(s|min|h), ", second.stderr), second.stderr


@pytest.mark.slow  # optimize and measure batches as subprocesses (6 s of CPU)
def test_model_batches_report_each_model_and_exit_with_the_worst(fast_target: Path, tmp_path: Path) -> None:  # noqa: F811
    models = tmp_path / "zoo"
    models.mkdir()
    _tiny_model(models / "a.onnx")
    _tiny_model(models / "b.onnx")
    (models / "broken.onnx").write_bytes(b"not onnx")
    before = {p.name: p.read_bytes() for p in models.iterdir()}
    measured = subprocess.run([sys.executable, "-m", "hwopt.cli", "measure", str(models / "*.onnx"), "-t",
                               str(fast_target), "--jobs", "2", "--json"], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    assert measured.returncode == 2, measured.stderr  # broken.onnx: bad input; the other two measured
    doc = json.loads(measured.stdout)
    assert [r["status"] for r in doc["summary"]] == ["ok", "ok", "bad input"]  # a, b, broken (glob order)
    assert all(m["latency_us"] > 0 for m in doc["measurements"][:2])
    assert "broken.onnx: hwopt: error:" in measured.stderr
    optimized = subprocess.run([sys.executable, "-m", "hwopt.cli", "optimize", str(models / "a.onnx"),
                                str(models / "b.onnx"), "-t", "cpu", "--cost", "estimator",
                                "--no-compare", "-o", str(tmp_path / "out"), "--report", str(tmp_path / "reports")],
                               cwd=REPO, capture_output=True, text=True, timeout=120)
    assert optimized.returncode == 0, optimized.stderr
    for name in ("a", "b"):
        # No site to rewrite (channels already multiples of P=8): nothing to do, so no model file (no churn).
        assert not (tmp_path / "out" / f"{name}.hwopt.onnx").exists()
        assert "nothing to do" in (tmp_path / "reports" / f"{name}.md").read_text()
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert "a.onnx | ok" in summary and "b.onnx | ok" in summary
    # A short summary per model (what was written, the gain, the report to open); the tables behind --verbose.
    # Nothing to do on either: nothing written, so no 'wrote' line.
    assert "summary" in optimized.stdout and optimized.stdout.count("\nwrote ") == 0
    assert optimized.stdout.count("next: open ") == 2 and "side by side" not in optimized.stdout
    assert {p.name: p.read_bytes() for p in models.iterdir()} == before  # inputs untouched


def test_rates_read_in_a_sensible_unit() -> None:
    """A fast batch is per second, a slow sweep per hour: never '10518/h'."""
    from hwopt.executors.progress import Rate, rate_text

    assert rate_text(10518 / 3600, "models") == "2.9 models/s"
    assert rate_text(0.7, "kernels") == "42 kernels/min"
    assert rate_text(7 / 3600, "kernels") == "7.0 kernels/h"
    now = [0.0]
    rate = Rate(clock=lambda: now[0])
    now[0] = 30.0
    assert "3.0 models/s" in rate.describe(90, 100, "models") and "ETA 0m03s" in rate.describe(90, 100, "models")
