"""The command line as a user and a pipeline see it: one line and exit 2 on bad input, inputs untouched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def hwopt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("HWOPT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "hwopt.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model(example_path) -> Path:
    return example_path("mobilenetv3_small")


def _one_line_exit_2(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("hwopt: error: "), done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("content, message", [
    (b"this is not a model\n" * 20, "not an ONNX model"),
    (b"", "the file is empty"),
])
def test_not_onnx(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    _one_line_exit_2(hwopt("inspect", str(path)), message)
    _one_line_exit_2(hwopt("apply", str(path), "-o", str(tmp_path / "o.onnx"), "--rule", "dw-to-dense"), message)
    assert path.read_bytes() == content and not (tmp_path / "o.onnx").exists()


def test_truncated(tmp_path: Path, model: Path) -> None:
    path = tmp_path / "truncated.onnx"
    path.write_bytes(model.read_bytes()[:100_000])
    before = digest(path)
    _one_line_exit_2(hwopt("apply", str(path), "-o", str(tmp_path / "o.onnx"), "--rule", "dw-to-dense"),
                     "truncated")
    assert digest(path) == before


@pytest.mark.parametrize("rule, message", [
    ("fuse-ibn@ibn42", "unknown ibn site 'ibn42'"),
    ("align-channels:p=-3", "parameter p must be >= 1"),
    ("align-channels:mode=fold", "mode must be one of pad, trim"),
    ("fuse-ibn:init=magic", "init must be one of lstsq, linear, random"),
    ("warp-speed", "unknown rule 'warp-speed' (rules:"),
    ("fuse-ibm@ibn1", "unknown rule 'fuse-ibm': did you mean fuse-ibn?"),
    ("fuse-ibn@ibn0", "fuse-ibn cannot apply at ibn0: the block has no expand conv"),
])
def test_bad_rules_and_sites(tmp_path: Path, model: Path, rule: str, message: str) -> None:
    before = digest(model)
    out = tmp_path / "o.onnx"
    _one_line_exit_2(hwopt("apply", str(model), "-o", str(out), "--rule", rule), message)
    assert digest(model) == before and not out.exists()


@pytest.mark.slow  # two CLI runs on the segmentation example (7 s of CPU)
def test_unsupported_op_at_a_site(tmp_path: Path, example_path) -> None:
    """A channel group fixed by a graph output or a Concat cannot be aligned when named explicitly."""
    model = example_path("segmentation")
    listing = json.loads(hwopt("inspect", str(model), "--json").stdout)
    fixed = next(s["id"] for s in listing["sites"] if s["kind"] == "ch" and s.get("fixed_by"))
    done = hwopt("apply", str(model), "-o", str(tmp_path / "o.onnx"), "--rule",
                 f"align-channels:p=32@{fixed}")
    _one_line_exit_2(done, f"align-channels cannot apply at {fixed}: its channel count is fixed by")


def test_refuses_to_overwrite_the_input(tmp_path: Path, model: Path) -> None:
    copy = tmp_path / "m.onnx"
    copy.write_bytes(model.read_bytes())
    before = digest(copy)
    _one_line_exit_2(hwopt("apply", str(copy), "-o", str(copy), "--rule", "dw-to-dense"),
                     f"refusing to overwrite the input {copy}: give -o another path")
    assert digest(copy) == before


def test_missing_dynamic_dim_is_explained(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    _one_line_exit_2(hwopt("inspect", str(path)), "'H' and 'W' open (dims 3 and 4 of 4, counted from 1)")
    _one_line_exit_2(hwopt("inspect", str(path)), "--input-shape x=1x3xHxW with H and W filled in")


@pytest.mark.slow  # inspect, rules and every apply as subprocesses (80 s on 2 cores at load 14)
def test_inspect_rules_and_apply_end_to_end(tmp_path: Path, model: Path) -> None:
    before = digest(model)
    listing = hwopt("inspect", str(model), "--json")
    assert listing.returncode == 0, listing.stderr
    sites = json.loads(listing.stdout)["sites"]
    assert any(s["id"] == "ibn1" and "fuse-ibn" in s["rules"] for s in sites)
    rules = hwopt("rules")
    assert rules.returncode == 0 and all(name in rules.stdout for name in
                                         ("fuse-ibn", "align-channels", "dw-to-dense", "depth-multiplier"))
    out = tmp_path / "out.onnx"
    done = hwopt("apply", str(model), "-o", str(out), "--rules", str(ROOT / "rules" / "exact-only.toml"), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["exact"] and result["final"]["exact"]
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert digest(model) == before
