"""On-chip memory across kernels: what exceeds a target's memory budget is charged its DRAM traffic.

Real pieces: a small ONNX model on disk, npu32's target file with its budget changed, SCALE-Sim (its disk
cache), the shipped npu32 estimator, the hwopt CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwopt.backends import scalesim_model
from hwopt.estimator import load_estimator
from hwopt.estimator.memory import offchip_traffic, on_chip
from hwopt.targets import load_target, load_target_file
from tests.tinymodel import write_tiny

REPO = Path(__file__).resolve().parents[2]


def _target(folder: Path, budget: int) -> Path:
    """npu32's target file with another memory budget."""
    text = (REPO / "estimator/npu32/target.toml").read_text()
    path = folder / f"npu32-{budget}.toml"
    path.write_text(text.replace("memory_budget_bytes = 4194304", f"memory_budget_bytes = {budget}"))
    assert load_target_file(path).memory_budget_bytes == budget
    return path


def test_policy_keeps_activations_on_chip_first():
    # 10 kB budget: 4 kB of activations stay, 6 kB of the 8 kB of weights stay, 2 kB are streamed once.
    streamed, spilled, traffic = offchip_traffic(np.array([8000.0]), np.array([4000.0]), 10_000)
    assert (streamed[0], spilled[0], traffic[0]) == (2000.0, 0.0, 2000.0)
    # Activations alone over the budget: every weight streamed, the excess written and read back.
    streamed, spilled, traffic = offchip_traffic(np.array([8000.0]), np.array([12_000.0]), 10_000)
    assert (streamed[0], spilled[0], traffic[0]) == (8000.0, 2000.0, 12_000.0)
    assert on_chip(8000, 4000, load_target("cpu")) is None  # no budget: no charge


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("model") / "tiny64.onnx", channels=64, size=4)


@pytest.mark.parametrize("budget", [16 * 1024, 4 * 1024 * 1024], ids=["over", "under"])
def test_measure_and_estimate_charge_what_exceeds_the_budget(tmp_path, model, budget):
    target = load_target_file(_target(tmp_path, budget))
    measured = scalesim_model(model, target)
    split = measured.meta["onchip"]
    estimate = load_estimator(target, REPO / "estimator/npu32").estimate(model)
    params, acts = estimate.param_bytes, estimate.peak_activation_bytes
    assert acts < 16 * 1024 < params  # the tiny model's weights exceed the small budget, its activations do not
    over = params + acts > budget
    expected = max(params - (budget - acts), 0) / target.offchip_bytes_per_us
    assert split["offchip_param_bytes"] == (params - (budget - acts) if over else 0)
    assert split["offchip_activation_bytes"] == 0
    assert (split["charge_us"] > 0) == over and split["charge_us"] == pytest.approx(expected)
    assert measured.latency_us == pytest.approx(measured.meta["kernel_sum_us"] + expected)
    # The estimate charges the same, on top of its kernels.
    assert estimate.memory_charge_us == pytest.approx(expected)
    assert estimate.latency_us == pytest.approx(sum(k.latency_us for k in estimate.per_kernel) + expected)


def test_measure_cli_shows_on_chip_and_off_chip_bytes(tmp_path, model):
    path = _target(tmp_path, 16 * 1024)
    done = subprocess.run([sys.executable, "-m", "hwopt.cli", "measure", str(model), "-t", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "off chip" in done.stdout and "DRAM traffic per inference" in done.stdout and "+ memory" in done.stdout
    assert "[array-only]" in done.stdout  # the hardware class the figure holds for
