"""One rule step on the tiny model (an IBN block with a residual: ibn0, dw0, ch:expand), for the rules' tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from hwopt.calibration.samples import random_inputs
from hwopt.canonical.canonicalize import load_canonical
from hwopt.rewrites.apply import ApplyResult, apply_steps
from hwopt.rewrites.ruleset import parse_rule_option
from tests.tinymodel import write_tiny


def apply_on_tiny(tmp_path: Path, rule: str, **tiny) -> tuple[onnx.ModelProto, ApplyResult]:
    """(the original, the result of ``rule`` in --rule syntax), refit on 32 random samples, judged on 8."""
    original, canonical, _ = load_canonical(write_tiny(tmp_path / "tiny.onnx", **tiny))
    result = apply_steps(original, canonical, [parse_rule_option(rule)], random_inputs(original, 32, 0),
                         random_inputs(original, 8, 1))
    return original, result


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def convs(model: onnx.ModelProto) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, weight shape, group) of every Conv."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            out.append((node.name, weights[node.input[1]], group))
    return out
