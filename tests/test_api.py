"""hwopt's Python API as a pipeline step uses it: hwopt.optimize / estimate / measure / apply, OptimizeRequest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import hwopt
from tests.tinymodel import write_tiny

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return write_tiny(tmp_path / "tiny.onnx")


def test_optimize_writes_what_it_is_asked_and_returns_the_report_fields(tiny: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out" / "tiny.opt.onnx", tmp_path / "report.json"
    before = tiny.read_bytes()
    result = hwopt.optimize(tiny, target="npu32", exact_only=True, output=out, report=report)
    assert result.ok and result.exit_code == 0
    assert tiny.read_bytes() == before  # the input is never written
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    doc = json.loads(report.read_text())
    # The result's fields are the JSON report's (the same schema), readable as attributes and keys.
    assert result.schema == doc["schema"] == "hwopt.optimize/2"
    assert result.best["latency_us"] == pytest.approx(doc["best"]["latency_us"])
    assert result["target"] == "npu32" and result.output == str(out)
    assert doc["request"] == hwopt.OptimizeRequest(target="npu32", exact_only=True).to_dict()
    # Exact rewrites only: the written model computes what the original does.
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 8)).astype(np.float32)
    y0 = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    y1 = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y1, y0, rtol=1e-4, atol=1e-5)
    with pytest.raises(AttributeError, match="no field 'latency'"):
        result.latency  # noqa: B018 - a misspelt field names the real ones


def test_optimize_without_output_writes_nothing_and_keeps_the_model(tiny: Path) -> None:
    files = set(tiny.parent.iterdir())
    result = hwopt.optimize(tiny, hwopt.OptimizeRequest(exact_only=True, compare=False))
    assert result.ok and isinstance(result.model, onnx.ModelProto) and result.output is None
    assert set(tiny.parent.iterdir()) == files


def test_request_is_checked_when_made_and_round_trips_through_json(tmp_path: Path) -> None:
    request = hwopt.OptimizeRequest(target="cpu", max_memory="4MiB", max_latency="2.5ms", input_shapes=["x=1x8x8x8"],
                                    calibration=str(tmp_path / "c.npz"), recover={"seconds": 60.0, "finalists": 1})
    assert request.max_memory == 4 * 2**20 and request.max_latency == pytest.approx(2500.0)
    assert request.calibration == tmp_path / "c.npz" and request.input_shapes == ("x=1x8x8x8",)
    assert request.recover == hwopt.Recovery(seconds=60.0, finalists=1)
    again = hwopt.OptimizeRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert again == request
    for bad, message in [({"fidelity": "top7"}, "--fidelity 'top7'"), ({"strategy": "random"}, "--strategy"),
                         ({"for_retraining": True, "min_fidelity": 0.9}, "--for-retraining"),
                         ({"max_latency": "2"}, "no unit"), ({"pick": "F3x"}, "--pick"), ({"holdout": 0}, "--holdout"),
                         ({"recover": {"seconds": None}}, "time budget or a number of epochs")]:
        with pytest.raises(hwopt.HwoptError, match=message):
            hwopt.OptimizeRequest(**bad)
    with pytest.raises(hwopt.HwoptError, match="unknown optimize setting 'targt'"):
        hwopt.OptimizeRequest.from_dict({"targt": "npu32"})


def test_bad_input_raises_one_line_before_any_work(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(hwopt.HwoptError, match="no such file"):
        hwopt.optimize(tmp_path / "missing.onnx")
    with pytest.raises(hwopt.HwoptError, match="refusing"):
        hwopt.optimize(tiny, output=tiny)  # the input as the output
    with pytest.raises(hwopt.HwoptError, match="not both"):
        hwopt.optimize(tiny, hwopt.OptimizeRequest(), exact_only=True)


def test_estimate_measure_and_apply_from_python(tiny: Path, tmp_path: Path) -> None:
    est = hwopt.estimate(tiny, "npu32")
    assert est.latency_us > 0 and est.detail.latency_us == pytest.approx(est.latency_us)
    measured = hwopt.measure(tiny, "npu32")
    assert measured.backend == "scalesim" and measured.latency_us > 0
    # The estimator and SCALE-Sim agree on this tiny model within the estimator card's band (a factor 2).
    assert 0.5 < est.latency_us / measured.latency_us < 2.0
    applied = hwopt.apply(tiny, "dw-to-grouped:channels=8@dw0", output=tmp_path / "g.onnx")
    assert applied.exact is True and (tmp_path / "g.onnx").is_file()
    groups = [a.i for n in applied.model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert 2 in groups  # 16 depthwise channels became 2 groups of 8


def test_the_cli_builds_the_same_request(tiny: Path, tmp_path: Path) -> None:
    """`hwopt optimize` and hwopt.optimize() record the same request for the same options."""
    report = tmp_path / "cli.json"
    done = subprocess.run([sys.executable, "-m", "hwopt.cli", "optimize", str(tiny), "-o", str(tmp_path / "o.onnx"),
                           "--exact-only", "--no-compare", "--max-memory", "1MiB", "--seed", "3", "--report",
                           str(report), "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    recorded = json.loads(report.read_text())["request"]
    assert recorded == hwopt.OptimizeRequest(exact_only=True, compare=False, max_memory="1MiB", seed=3).to_dict()


def test_the_python_pipeline_example_writes_or_blocks(tiny: Path, tmp_path: Path) -> None:
    """examples/pipeline/deploy_step.py: 0 and its three files within the budget; 1 and the reason without."""
    from examples.pipeline.deploy_step import main

    out = tmp_path / "out"
    assert main([str(tiny), "--out", str(out), "--target", "npu32"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tiny.npu32.html", "tiny.npu32.onnx", "tiny.npu32.rules.toml"]
    assert main([str(tiny), "--out", str(tmp_path / "none"), "--max-memory", "1KiB", "--target", "npu32"]) == 1
    assert main([str(tmp_path / "missing.onnx"), "--out", str(out)]) == 2
