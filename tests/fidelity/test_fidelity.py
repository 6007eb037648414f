"""Task fidelity: metrics on real onnxruntime outputs, the budget, the sensitivity table, the search under it.

Real pieces: example models written to disk and run with onnxruntime, real
rewrites refit on real (random) samples, the target's real cost model.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from hwopt.calibration.samples import CalibrationSplit, OrtRunner, random_inputs, split_samples
from hwopt.canonical.canonicalize import load_canonical
from hwopt.errors import HwoptError
from hwopt.fidelity.metrics import METRICS, FidelityBudget, choose_metric, measure
from hwopt.search.config import load_search_file
from hwopt.search.cost import make_cost_model
from hwopt.search.objective import INFEASIBLE, Budgets, Objective
from hwopt.search.sensitivity import DecisionCost, FidelityModel, measure_costs, worth_measuring
from hwopt.search.space import build_space
from hwopt.search.strategies import Problem, exhaustive
from hwopt.search.variants import VariantModel
from hwopt.search.verifier import Verifier
from hwopt.analysis.sites import Analysis
from hwopt.targets import load_target
from hwopt.fidelity.verify import compare_arrays

RULES = """
[search.fuse-ibn]
sites = ["ibn1", "ibn2"]
[search.dw-to-dense]
sites = ["dw1", "dw2"]
"""


def _outputs(path, samples):
    model = onnx.load(str(path))
    return model, OrtRunner(model).run_all(samples, [o.name for o in model.graph.output])


def _perturbed(model: onnx.ModelProto, scale: float, seed: int = 0) -> onnx.ModelProto:
    """The model with every weight matrix jittered by ``scale`` x its own spread."""
    rng = np.random.default_rng(seed)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim >= 2:
            init.CopyFrom(numpy_helper.from_array((w + scale * w.std() * rng.standard_normal(w.shape)).astype(w.dtype),
                                                  init.name))
    return copy


@pytest.fixture(scope="module")
def v3(example_path):
    path = example_path("mobilenetv3_small")
    samples = random_inputs(onnx.load(str(path)), 12, 0)
    model, ref = _outputs(path, samples)
    cand_model = _perturbed(model, 0.01)
    cand = OrtRunner(cand_model).run_all(samples, [o.name for o in model.graph.output])
    return model, samples, ref, cand_model, cand


def test_classifier_metrics_on_real_outputs(v3):
    model, _, ref, _, cand = v3
    (name,) = ref
    r, c = ref[name], cand[name]
    assert r.shape == (12, 1000)
    top1 = METRICS["top1"].score(r, c)
    assert top1 == pytest.approx(np.mean(r.argmax(1) == c.argmax(1)))
    assert 0.0 < top1 < 1.0  # the jitter moves some decisions, not all (else this test proves nothing)
    top5 = METRICS["top5"].score(r, c)
    by_hand = np.mean([r[i].argmax() in np.argsort(-c[i])[:5] for i in range(len(r))])
    assert top5 == pytest.approx(by_hand) and top5 >= top1
    cos = METRICS["cosine"].score(r, c)
    by_hand = np.mean([r[i] @ c[i] / np.linalg.norm(r[i]) / np.linalg.norm(c[i]) for i in range(len(r))])
    assert cos == pytest.approx(by_hand, abs=1e-6)  # by hand in float32
    fid = measure(ref, cand, choose_metric({name: r.shape}))
    assert fid.metric == "top1" and fid.value == top1
    assert fid.rel_l2 == pytest.approx(compare_arrays(name, r, c).rel_l2, rel=1e-9)
    assert METRICS["rel-l2"].score(r, c) == pytest.approx(1 - fid.rel_l2)
    assert measure(ref, ref, METRICS["top1"]).value == 1.0 and measure(ref, ref, METRICS["top1"]).rel_l2 == 0.0


def test_dense_and_multi_output_metrics(example_path):
    seg = example_path("segmentation")
    samples = random_inputs(onnx.load(str(seg)), 1, 0)
    model, ref = _outputs(seg, samples)
    cand = OrtRunner(_perturbed(model, 0.03)).run_all(samples, list(ref))
    (name,) = ref
    assert ref[name].shape == (1, 21, 256, 256)
    metric = choose_metric({name: ref[name].shape})
    assert metric.name == "argmax"
    value = metric.score(ref[name], cand[name])
    assert value == pytest.approx(np.mean(ref[name].argmax(1) == cand[name].argmax(1)))
    assert 0.0 < value < 1.0
    with pytest.raises(HwoptError, match="--fidelity top1 needs"):
        choose_metric({name: ref[name].shape}, "top1")
    # Several outputs (a detector's boxes and scores): cosine, and the worst output is the model's figure.
    ssd = example_path("ssdlite_mobilenetv2")
    samples = random_inputs(onnx.load(str(ssd)), 1, 0)
    model, ref = _outputs(ssd, samples)
    cand = OrtRunner(_perturbed(model, 0.05)).run_all(samples, list(ref))
    metric = choose_metric({n: v.shape for n, v in ref.items()})
    assert metric.name == "cosine" and len(ref) == 2
    fid = measure(ref, cand, metric)
    assert fid.value == min(fid.outputs.values()) and len(fid.outputs) == 2


def test_budget_refuses_nan_and_low_fidelity(example_path):
    path = example_path("mobilenetv3_small")
    original, canonical, _ = load_canonical(path)
    split = CalibrationSplit(random_inputs(original, 4, 0), random_inputs(original, 6, 1), {"random": True})
    verifier = Verifier(original, canonical, split)
    assert verifier.metric.name == "top1"
    verifier.budget = FidelityBudget(verifier.metric, 0.99, 0.5)
    same = verifier.measure(original)
    assert verifier.misses(same, exact=True) is None
    # Judged as an inexact model, 6 perfect samples prove only 0.05 ** (1/6) = 60.7%, not 99%.
    assert same.bound.lower == pytest.approx(0.05 ** (1 / 6)) and "lower bound 60.70%" in verifier.misses(same)
    broken = onnx.ModelProto()
    broken.CopyFrom(original)
    init = max(broken.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
    w = numpy_helper.to_array(init).copy()
    w.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    fid = verifier.measure(broken)
    assert math.isnan(fid.value) and not fid.finite
    assert "non-finite" in verifier.misses(fid)
    # Without a fidelity minimum (--for-retraining) NaN still fails.
    assert "non-finite" in FidelityBudget(verifier.metric, None).misses(fid)
    low = verifier.measure(_perturbed(original, 1.0))
    assert low.value < 0.99 and "top-1 agreement" in verifier.misses(low)


def test_split_holds_out_whole_groups():
    data = {"x": np.arange(40, dtype=np.float32).reshape(40, 1)}
    groups = np.repeat(np.array(["a", "b", "c", "d", "e"]), 8)
    split = split_samples(data, 0.25, count=64, groups=groups, seed=1)
    held, fit = set(split.held_out["x"].ravel()), set(split.fit["x"].ravel())
    assert not held & fit and len(held) == 16  # two whole photos of 8 crops: at least a quarter
    assert {groups[int(i)] for i in held}.isdisjoint({groups[int(i)] for i in fit})
    assert "groups held out" in split.info["split"] and split.info["held_out"] == 16
    plain = split_samples(data, 10)
    assert plain.info["held_out"] == 10 and (plain.held_out["x"].ravel() == np.arange(30, 40)).all()
    # Recovery trains on every sample not held out; the refits fit at most ``count`` of them.
    capped = split_samples(data, 10, count=8)
    assert len(capped.fit["x"]) == 8 and (capped.train["x"].ravel() == np.arange(30)).all()


@pytest.fixture(scope="module")
def tiny(example_path, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "tiny.toml"
    rules.write_text(RULES)
    original, canonical, _ = load_canonical(example_path("mobilenetv3_small"))
    analysis = Analysis(canonical)
    target = load_target("npu32")
    space = build_space(analysis, load_search_file(rules), target.parallelism)
    vm = VariantModel(analysis, space, target.fusion, target.dtype_bytes, make_cost_model("auto", target))
    return original, canonical, space, vm


def test_sensitivity_table_measures_each_inexact_option_alone(tiny):
    original, canonical, space, vm = tiny
    split = CalibrationSplit(random_inputs(original, 4, 0), random_inputs(original, 4, 1), {"random": True})
    verifier = Verifier(original, canonical, split)
    costs, f0, r0 = measure_costs(space, vm, verifier)
    assert (f0, r0) == (1.0, 0.0)  # nothing pinned
    pairs = worth_measuring(space, vm)
    assert [(c.var, c.option) for c in costs] == pairs and pairs  # only inexact options that pay
    assert all(not space.variables[c.var].options[c.option].exact for c in costs)
    # One entry is the option alone, materialised: the same figure as applying it by hand.
    c = costs[0]
    decisions = list(space.start)
    decisions[c.var] = c.option
    again = verifier.apply(space.steps(tuple(decisions))).fidelity
    assert (again.value, again.rel_l2) == pytest.approx((c.fidelity, c.rel_l2))
    assert c.rel_l2 > 0  # fusion changes the function


def test_predicted_fidelity_constraint_steers_the_search(tiny):
    _, _, space, vm = tiny
    fuse = [(vi, v.options.index(o)) for vi, v in enumerate(space.variables) for o in v.options if o.value == "fuse"]
    assert len(fuse) == 2
    # Hand-set costs: fusing the first block breaks the task, the second costs 0.5%.
    costs = [DecisionCost(fuse[0][0], fuse[0][1], "a", "fuse", "fuse-ibn", 0.40, 0.5, 0.0),
             DecisionCost(fuse[1][0], fuse[1][1], "b", "fuse", "fuse-ibn", 0.995, 0.05, 0.0)]
    model = FidelityModel(space, costs)

    def best(min_fidelity):
        problem = Problem(space, vm, Objective(Budgets(), min_fidelity), restrict=model.allowed(), fidelity=model)
        exhaustive(problem)
        rows, fitness = problem.archive()
        feasible = [r for r, f in zip(rows, fitness) if f < INFEASIBLE]
        return rows[0], feasible

    free, _ = best(None)
    assert free[fuse[0][0]] == fuse[0][1] and free[fuse[1][0]] == fuse[1][1]  # both fusions pay off
    steered, feasible = best(0.99)
    assert steered[fuse[0][0]] != fuse[0][1] and steered[fuse[1][0]] == fuse[1][1]  # the cheap one only
    assert all(model.predict(tuple(r))[0] >= 0.99 for r in feasible)
    assert model.predict(tuple(free))[0] == pytest.approx(0.40 * 0.995)
    assert FidelityModel(space, costs, mode="linear").predict(tuple(free))[0] == pytest.approx(1 - 0.6 - 0.005)
    assert model.predict(tuple(free))[1] == pytest.approx(math.hypot(0.5, 0.05))
    nan = FidelityModel(space, [DecisionCost(*fuse[0], "a", "fuse", "fuse-ibn", math.nan, math.nan, 0.0)])
    problem = Problem(space, vm, Objective(Budgets(), 0.5), restrict=nan.allowed(), fidelity=nan)
    exhaustive(problem)
    rows, fitness = problem.archive()
    assert all(r[fuse[0][0]] != fuse[0][1] for r, f in zip(rows, fitness) if f < INFEASIBLE)


def test_cosine_counts_fp32_noise_on_a_near_empty_sample_as_agreement():
    """A detector's map of a photo without text is ~1e-9 everywhere: float rounding there (well inside
    fp32 tolerance at the set's scale) is agreement, while a real change of the same sample is not."""
    rng = np.random.default_rng(0)
    full = rng.random((3, 1, 16, 16)).astype(np.float32)  # maps with text
    empty = (rng.random((1, 1, 16, 16)) * 1e-9).astype(np.float32)
    ref = np.concatenate([full, empty])
    rounding = ref.copy()
    rounding[3] = rng.random((1, 16, 16)) * 1e-9  # a different pattern, but far below fp32 noise at scale 1
    assert METRICS["cosine"].score(ref, rounding) == pytest.approx(1.0)
    a, b = ref[3].ravel().astype(np.float64), rounding[3].ravel().astype(np.float64)
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) < 0.9  # the plain cosine would call it a miss
    spurious = ref.copy()
    spurious[3] = 0.01 * rng.random((1, 16, 16))  # the variant lights up the empty map: a real change
    assert METRICS["cosine"].score(ref, spurious) < 0.99
