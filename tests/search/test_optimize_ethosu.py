"""optimize on an Ethos-U target: scored by the trained estimator, judged by whole-model Vela."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwopt.backends.vela import measure_model
from hwopt.targets import load_target
from tests.tinymodel import write_tiny

pytest.importorskip("ethosu.vela")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWOPT_CACHE", str(tmp_path_factory.getbasetemp() / "hwopt-cache"))


@pytest.mark.slow  # ~1 min each on 2 shared cores: a search plus whole-model Vela compiles
@pytest.mark.parametrize("mode", [[], ["--for-retraining"]])
def test_written_model_is_never_slower_by_vela(tmp_path: Path, mode: list[str]) -> None:
    """The search scores with ethos-u55-256's estimator and verifies its finalists with whole-model Vela: the
    written model (or the original, kept and said) is never slower by Vela, and the report's measured
    column holds Vela's figures of the original and the best."""
    model = write_tiny(tmp_path / "tiny.onnx", channels=16, size=16)
    out = tmp_path / "out.onnx"
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "hwopt.cli", "optimize", str(model), "-t", "ethos-u55-256",
                           "-o", str(out), "--json", "--eval-samples", "4", "--report", str(tmp_path / "r.html"), *mode], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    # The HTML report renders an Ethos-U card (real-export figures, no held-out-family section).
    page = (tmp_path / "r.html").read_text()
    assert "real exports none of whose kernels was measured" in page
    target = load_target("ethos-u55-256")
    original_us = measure_model(model, target).latency_us
    if not out.exists():  # nothing worth writing: the original is the model to deploy (said, no file churn)
        assert doc["output"] is None and doc["nothing_to_do"], doc["best"].get("note")
        return
    written_us = measure_model(out, target).latency_us
    assert written_us <= original_us * 1.005, (written_us, original_us, doc["best"].get("note"))
    assert doc["best"]["rules"]
    # The written variant was judged by whole-model Vela against the original: both figures in the report.
    assert doc["variants"][0]["measured_latency_us"] == pytest.approx(original_us, rel=1e-6)
    assert doc["best"]["measured_latency_us"] == pytest.approx(written_us, rel=1e-6)
    assert doc["cost_model"].startswith("estimator")
