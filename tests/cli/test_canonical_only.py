"""hwopt apply --canonical-only writes the canonical form, and optimize says when its figures are of folds the
user's file does not have (PP-OCRv4's detector head, paddle2onnx: a ConvTranspose's bias Add and a BatchNorm)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.cli.test_cli import hwopt


def _head(path: Path) -> Path:
    rng = np.random.default_rng(0)
    cin, cout = 8, 6
    inits = [numpy_helper.from_array(rng.normal(size=(cin, cout, 2, 2)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(1, cout, 1, 1)).astype(np.float32), "b"),
             numpy_helper.from_array(rng.uniform(0.5, 2, cout).astype(np.float32), "g"),
             numpy_helper.from_array(rng.normal(size=cout).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.normal(size=cout).astype(np.float32), "mu"),
             numpy_helper.from_array(rng.uniform(0.5, 2, cout).astype(np.float32), "var")]
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["t"], name="up", strides=[2, 2]),
             helper.make_node("Add", ["t", "b"], ["a"], name="bias"),
             helper.make_node("BatchNormalization", ["a", "g", "beta", "mu", "var"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, 16, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_apply_canonical_only_writes_the_folded_form(tmp_path: Path) -> None:
    model = _head(tmp_path / "head.onnx")
    out = tmp_path / "canonical.onnx"
    done = hwopt("apply", str(model), "--canonical-only", "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    written = onnx.load(str(out))
    assert [n.op_type for n in written.graph.node] == ["ConvTranspose", "Relu"]
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 8)).astype(np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(out), run(model), rtol=1e-4, atol=1e-5)
    both = hwopt("apply", str(model), "--canonical-only", "--rule", "align-channels", "-o", str(tmp_path / "x.onnx"))
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "--canonical-only" in both.stderr
    none = hwopt("apply", str(model), "-o", str(tmp_path / "y.onnx"))
    assert none.returncode == 2 and "--canonical-only" in none.stderr


@pytest.mark.slow  # a whole optimize run through the CLI (~20 s on 2 shared cores)
def test_optimize_says_its_figures_are_of_the_folded_form(tmp_path: Path) -> None:
    model = _head(tmp_path / "head.onnx")
    done = hwopt("optimize", str(model), "-t", "npu32", "-o", str(tmp_path / "o.onnx"), "--json", "--no-compare")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["output"] is None and any(n.startswith("folded 2") for n in doc["canonicalization_notes"])
    assert "--canonical-only" in done.stderr and "canonical form" in done.stderr
