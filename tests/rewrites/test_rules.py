"""Every rule on every example where it has sites: valid ONNX, same signature, exact where claimed."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hwopt.rewrites.apply import apply_steps
from hwopt.calibration.samples import random_inputs
from hwopt.canonical.canonicalize import load_canonical
from hwopt.errors import HwoptError
from hwopt.rewrites import RULES
from hwopt.rewrites.ruleset import parse_rule_option
from hwopt.analysis.sites import Analysis
from hwopt.fidelity.verify import ATOL, RTOL, compare_models
from tests.conftest import EXAMPLES

# Parameters that give every rule sites on the examples (P=24 misaligns the usual multiples of 8/32).
RULE_OPTIONS = {
    # The graph surgery at every site (linear init is instant); the least-squares refit on early blocks.
    "fuse-ibn-all": "fuse-ibn:init=linear",
    "fuse-ibn-lstsq": "fuse-ibn@ibn[1-3]",
    "align-channels": "align-channels:p=24,mode=pad",
    "align-trim": "align-channels:p=24,mode=trim",
    "dw-to-dense": "dw-to-dense",
    "dw-to-grouped": "dw-to-grouped:channels=8",
    "depth-multiplier": "depth-multiplier:ratio=0.5,p=8",
}


@pytest.fixture(scope="module")
def loaded(example_path):
    cache = {}

    def get(name):
        if name not in cache:
            original, canonical, _ = load_canonical(example_path(name))
            cache[name] = (original, canonical, random_inputs(original, 8, 0), random_inputs(original, 2, 1))
        return cache[name]

    return get


def _signature(model: onnx.ModelProto) -> list[bytes]:
    initializers = {t.name for t in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in initializers] + list(model.graph.output)
    return [v.SerializeToString() for v in values]


# Every rule on every example costs 1-39 s of CPU each (refits and verification on full-size models): the fast
# tier keeps the smallest example for every rule but fuse-ibn (its refits: tests/rewrites/test_fuse_ibn.py is fast),
# the slow tier has them all.
SLOW_OPTIONS = {"fuse-ibn-all", "fuse-ibn-lstsq"}
FAST_EXAMPLE = "mobilenetv3_small"


def _case(option: str, name: str):
    slow = option in SLOW_OPTIONS or name != FAST_EXAMPLE
    return pytest.param(option, name, marks=pytest.mark.slow) if slow else pytest.param(option, name)


@pytest.mark.parametrize("option, name", [_case(o, n) for o in RULE_OPTIONS for n in EXAMPLES])
def test_rule_on_example(loaded, tmp_path, name: str, option: str) -> None:
    original, canonical, calibration, evaluation = loaded(name)
    step = parse_rule_option(RULE_OPTIONS[option])
    rule = RULES[step.rule]
    analysis = Analysis(canonical)
    candidates = analysis.select(step.sites, rule.site_kind) if step.sites else rule.find_sites(analysis)
    eligible = [s for s in candidates if rule.check(s, step.params, analysis) is None]
    result = apply_steps(original, canonical, [step], calibration, evaluation)
    applied = result.steps[0].applied
    assert len(applied) == len(eligible)
    if not eligible:
        pytest.skip(f"{name} has no site for {option}")
    # Written to disk and read back: full checker, onnxruntime, same signature.
    path = tmp_path / "out.onnx"
    onnx.save(result.model, path)
    written = onnx.load(path)
    onnx.checker.check_model(written, full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [o.name for o in original.graph.output]
    assert _signature(written) == _signature(original)
    comparison = compare_models(original, written, random_inputs(original, 2, seed=11))
    if rule.is_exact(step.params):
        assert comparison.exact, comparison.to_dict()
        for out in comparison.outputs:
            assert out.max_abs_err <= ATOL + RTOL * out.max_abs_err / max(out.rel_max_abs_err, 1e-30)
    else:
        # Inexact rules report their deviation; it is finite and not the identity by accident.
        assert all(np.isfinite(o.rel_l2) for o in comparison.outputs)
        assert result.final is not None and not result.exact


def test_all_four_rules_in_sequence_on_mobilenetv2(loaded) -> None:
    original, canonical, calibration, evaluation = loaded("mobilenetv2")
    steps = [parse_rule_option(t) for t in ("fuse-ibn@ibn1,ibn2", "depth-multiplier:ratio=0.75@ibn8",
                                            "dw-to-dense@dw3", "align-channels:p=32,mode=pad")]
    result = apply_steps(original, canonical, steps, calibration, evaluation)
    assert [len(s.applied) for s in result.steps[:3]] == [2, 1, 1]
    onnx.checker.check_model(result.model, full_check=True)
    assert not result.exact and result.final.outputs[0].cosine > 0.5


def test_pad_then_dense_stay_exact_on_mobilenetv3(loaded) -> None:
    """Odd channel counts (72, 88, 120, ...) padded to 32, then every depthwise made dense: still exact."""
    original, canonical, calibration, evaluation = loaded("mobilenetv3_small")
    steps = [parse_rule_option("align-channels:p=32,mode=pad"), parse_rule_option("dw-to-dense")]
    result = apply_steps(original, canonical, steps, calibration, evaluation)
    assert result.exact and result.final.exact
    assert len(result.steps[0].applied) > 5
    analysis = Analysis(result.model)
    assert all(g.channels % 32 == 0 for g in analysis.groups if g.resizable)


def test_explicit_site_that_cannot_take_the_rule_is_an_error(loaded) -> None:
    original, canonical, calibration, evaluation = loaded("mobilenetv2")
    with pytest.raises(HwoptError, match="fuse-ibn cannot apply at ibn0: the block has no expand conv"):
        apply_steps(original, canonical, [parse_rule_option("fuse-ibn@ibn0")], calibration, evaluation)
    with pytest.raises(HwoptError, match="unknown ibn site 'ibn99'"):
        apply_steps(original, canonical, [parse_rule_option("fuse-ibn@ibn99")], calibration, evaluation)


@pytest.mark.parametrize("text, message", [
    ("nope", "unknown rule 'nope'"),
    ("align-channels:p=0", "p must be >= 1"),
    ("align-channels:mode=shrink", "mode must be one of pad, trim"),
    ("fuse-ibn:colour=red", "unknown parameter 'colour'"),
    ("depth-multiplier:ratio=abc", "ratio must be float"),
    ("fuse-ibn@", "no site after '@'"),
])
def test_bad_rule_options(text: str, message: str) -> None:
    with pytest.raises(HwoptError, match=message):
        parse_rule_option(text)
