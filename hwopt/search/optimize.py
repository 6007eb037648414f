"""``hwopt optimize``: search, pick within budgets, materialise, verify, write, report.

1. Canonical model -> sites -> search space (rule set's ``[search]`` table).
2. Every kernel the space can produce is predicted once (cost model); the
   strategy scores variants from kernel tables (``variants.py``).
3. Finalists (best feasible by latency) are materialised with ``apply_steps``
   in order until one is within ``--max-deviation``; that one is written.
4. Side-by-side rows: baseline, each rule alone (wherever it helps), best.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from hwopt.apply import AppliedPrefixes, ApplyResult, apply_steps
from hwopt.canonicalize import load_canonical
from hwopt.errors import HwoptError, VerificationError
from hwopt.kernels import Kernel
from hwopt.ruleset import RuleStep
from hwopt.search.config import SearchConfig, default_rules_path, load_search_file
from hwopt.search.cost import make_cost_model
from hwopt.search.objective import INFEASIBLE, Budgets, Objective, within
from hwopt.search.space import Space, build_space
from hwopt.search.strategies import Problem, resolve_strategy, run_strategy
from hwopt.search.variants import VariantModel
from hwopt.sites import Analysis
from hwopt.targets import load_target
from hwopt.verify import ModelOutputs

Progress = Callable[[str, int, int], None]


@dataclass
class Candidate:
    """One variant with its estimated figures and, once materialised, its measured deviation."""

    label: str
    decisions: tuple[int, ...]
    figures: dict[str, float]
    steps: list[RuleStep]
    exact: bool
    result: ApplyResult | None = None
    deviation: float | None = None  # worst relative L2 over the outputs vs the original
    measured_us: float | None = None
    note: str = ""
    band: dict | None = None  # the estimate's 80% band and what drives it (hwopt.estimate), where it has one

    @property
    def metrics(self):
        return self.result.after if self.result is not None else None


@dataclass
class OptimizeResult:
    model_path: Path
    target: Any
    cost_name: str
    strategy: str
    space: Space
    vm: VariantModel
    budgets: Budgets
    evaluated: int
    search_seconds: float
    rows: list[Candidate]  # baseline, each rule alone, best
    best: Candidate | None
    finalists: list[Candidate]
    pareto: list[dict[str, float]]
    failure: list[str] = field(default_factory=list)  # why no variant meets the budgets
    seconds: dict[str, float] = field(default_factory=dict)
    recovered: list = field(default_factory=list)  # recovery.Recovered, with --recover


def _figures(vm: VariantModel, decisions: tuple[int, ...]) -> dict[str, float]:
    raw = vm.evaluate(np.array([decisions]))
    return {k: float(v[0]) for k, v in raw.items()}


def _band(cost_model, vm: VariantModel, decisions: tuple[int, ...]) -> dict | None:
    """The estimate's 80% band over the variant's kernels (None: the cost model has no intervals)."""
    estimator = getattr(cost_model, "estimator", None)
    kernels = [k for k in vm.kernels(decisions) if k is not None]
    band = estimator.interval(kernels) if estimator is not None else None
    if band is None:
        return None
    low, high, ood = band
    widest = np.argsort(-(high - low))[:3]
    return {"level": 0.8, "low_us": float(low.sum()), "high_us": float(high.sum()), "ood_kernels": int(ood.sum()),
            "drivers": [{"kernel": kernels[i].describe(), "low_us": float(low[i]), "high_us": float(high[i]),
                         "ood": bool(ood[i])} for i in widest]}


def _measure_finalists(ranked: list[Candidate], best: Candidate, canonical, target, accept
                       ) -> tuple[Candidate, float]:
    """Materialise every finalist within the budgets, time them and the original on the target: (the fastest
    measured, the original's time). The estimate only ranked them."""
    from hwopt.backends import model_measurer

    measurer = model_measurer(target)
    timed = []
    for cand in ranked:
        if cand is best or (cand.result is None and accept(cand)) or (cand.result is not None and not cand.note):
            cand.measured_us = float(measurer(cand.result.model, target).latency_us)
            timed.append(cand)
    original_us = float(measurer(canonical, target).latency_us)
    fastest = min(timed, key=lambda c: c.measured_us)
    order = sorted(timed, key=lambda c: c.figures["latency_us"])
    for cand in timed:
        cand.note = (cand.note + "; " if cand.note else "") + (
            f"measured {cand.measured_us / 1000:.3f} ms (original {original_us / 1000:.3f} ms), "
            f"estimate ranked it {order.index(cand) + 1} of {len(timed)}")
    return fastest, original_us


def rule_alone(space: Space, vm: VariantModel, rule: str) -> tuple[int, ...]:
    """Each site's best option among the original and ``rule``'s, all other sites as they are."""
    base = np.array(space.baseline, dtype=np.int64)
    chosen = base.copy()
    for vi, var in enumerate(space.variables):
        options = [i for i, o in enumerate(var.options) if o.choice is not None and o.choice.rule == rule]
        if not options:
            continue
        rows = np.repeat(base[None], len(options) + 1, axis=0)
        rows[1:, vi] = options
        latency = vm.latency(rows)
        chosen[vi] = rows[int(np.argmin(latency)), vi]
    return tuple(int(x) for x in chosen)


def pareto_front(rows: np.ndarray, figures: dict[str, np.ndarray], limit: int = 12) -> list[dict[str, float]]:
    """Non-dominated (latency, memory) variants among the evaluated ones, by memory (thinned to ``limit``)."""
    order = np.lexsort((figures["latency_us"], figures["memory_bytes"]))
    front, best = [], np.inf
    for i in order:
        if figures["latency_us"][i] < best:
            best = figures["latency_us"][i]
            front.append(int(i))
    if len(front) > limit:
        keep = np.unique(np.linspace(0, len(front) - 1, limit).round().astype(int))
        front = [front[k] for k in keep]
    return [{"latency_us": float(figures["latency_us"][i]), "memory_bytes": float(figures["memory_bytes"][i]),
             "params": float(figures["params"][i]), "decisions": tuple(int(x) for x in rows[i])} for i in front]


def _picked(pareto: list[dict], pick: str, objective: Objective) -> tuple[int, ...]:
    """The decisions of Pareto point ``pick`` (``p1`` = the first row of the front)."""
    ids = [f"p{i + 1}" for i in range(len(pareto))]
    if pick not in ids:
        raise HwoptError(f"--pick {pick!r}: the Pareto front of this run has ids {', '.join(ids)} (the same model, "
                         f"rule set, target and --seed give the same front)")
    point = pareto[ids.index(pick)]
    shortfall = objective.shortfall(point)
    if shortfall:
        raise HwoptError(f"--pick {pick}: not within the budgets: {'; '.join(shortfall)}")
    return point["decisions"]


def _materialise(candidate: Candidate, original, canonical, calibration, evaluation, seed, progress,
                 shared: tuple[ModelOutputs, AppliedPrefixes] | None = None) -> None:
    outputs, prefixes = shared or (None, None)
    try:
        result = apply_steps(original, canonical, candidate.steps, calibration, evaluation, seed=seed,
                             progress=progress, outputs=outputs, prefixes=prefixes)
    except VerificationError as exc:  # this variant fails (non-finite outputs, ...); others may not
        candidate.deviation, candidate.note = float("inf"), str(exc)
        return
    candidate.result = result
    candidate.deviation = 0.0 if result.final is None else float(result.final.worst_rel_l2)
    candidate.exact = result.exact if candidate.steps else True


# Deviation back-off levels: which options a re-search keeps (the original is always kept).
BACKOFF: list[tuple[str, Callable]] = [
    ("no depth-multiplier", lambda o: o.choice is None or o.choice.rule != "depth-multiplier"),
    ("fusion and exact rewrites", lambda o: o.choice is None or o.exact or o.choice.rule == "fuse-ibn"),
]
# After those: at most half, a quarter, ... of the fastest finalist's inexact decisions, down to none.


def _diverse(rows: np.ndarray, count: int) -> list[int]:
    """Indices of up to ``count`` rows, fastest first, each differing from the ones before in at least
    a tenth of the decisions (two at least): the runners-up of a search mostly differ in one cheap
    decision and would all deviate alike."""
    need = max(2, len(rows[0]) // 10) if len(rows) else 0
    chosen: list[int] = []
    for i, row in enumerate(rows):
        if all(int((row != rows[j]).sum()) >= need for j in chosen):
            chosen.append(i)
            if len(chosen) >= max(count, 1):
                break
    return chosen


def _accept(cand: Candidate, budgets: Budgets, original, canonical, calibration, evaluation, seed, progress,
            shared: tuple[ModelOutputs, AppliedPrefixes] | None = None) -> bool:
    """Materialise a finalist and check it against --max-deviation."""
    _materialise(cand, original, canonical, calibration, evaluation, seed, progress, shared)
    if cand.result is None:
        return False
    if not within(cand.deviation, budgets.max_deviation):
        cand.note = (f"output deviation {cand.deviation:.4g} > --max-deviation {budgets.max_deviation:.4g}"
                     if budgets.max_deviation is not None and np.isfinite(cand.deviation)
                     else f"output deviation {cand.deviation} is not a finite number")
        return False
    return True


def optimize(
    model_path: Path,
    *,
    target_name: str = "npu32",
    rules_path: Path | None = None,
    input_shapes=(),
    budgets: Budgets = Budgets(),
    strategy: str = "auto",
    cost: str = "auto",
    exact_only: bool = False,
    seed: int = 0,
    finalists: int = 3,
    compare_rules: bool = True,
    calibration_sets: Callable[[onnx.ModelProto], tuple[dict, dict]] | None = None,
    measure: bool = False,
    progress: Progress | None = None,
    pick: str | None = None,
    allow_fallback: bool = False,
    measure_finalists: bool | None = None,
    recover=None,
) -> tuple[OptimizeResult, onnx.ModelProto | None]:
    """``pick``: a Pareto id of an earlier report (``p3``; same model, rule set, target and seed) to
    materialise and write instead of the fastest variant within the budgets. ``measure_finalists``: time
    every finalist on the target and keep the fastest measured (default: where the target is measured
    locally and cheaply, onnxruntime). ``recover``: ``recovery.RecoveryOptions`` to distil the fastest
    finalists from the original and keep the fastest that meets the budgets after."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    target = load_target(target_name)
    config: SearchConfig = load_search_file(rules_path or default_rules_path())
    if exact_only:
        config = config.restricted_to_exact()
    original, canonical, _ = load_canonical(model_path, list(input_shapes), seed=seed, for_writing=True)
    analysis = Analysis(canonical)
    p = config.p or target.parallelism
    space = build_space(analysis, config, p)
    cost_model = make_cost_model(cost, target, (lambda d, t: progress("measuring kernels", d, t)) if progress else None,
                                 allow_fallback=allow_fallback)
    timings["load"] = time.perf_counter() - start
    t0 = time.perf_counter()
    vm = VariantModel(analysis, space, target.fusion, target.dtype_bytes, cost_model, progress)
    timings["predict"] = time.perf_counter() - t0
    objective = Objective(budgets)
    name = resolve_strategy(strategy, space)
    problem = Problem(space, vm, objective, seed=seed, progress=progress)
    t0 = time.perf_counter()
    problem.evaluate(problem.start[None])
    run_strategy(name, problem)
    rows, fitness = problem.archive()
    timings["search"] = time.perf_counter() - t0
    all_figures = vm.evaluate(rows)
    pareto = pareto_front(rows, all_figures)

    def candidate(label: str, decisions) -> Candidate:
        decisions = tuple(int(x) for x in decisions)
        return Candidate(label, decisions, _figures(vm, decisions), space.steps(decisions), space.is_exact(decisions),
                         band=_band(cost_model, vm, decisions))

    if calibration_sets is None:  # from Python without inputs: seeded random ones, as the CLI does
        from functools import partial

        from hwopt.calibration import calibration_sets as default_sets

        calibration_sets = partial(default_sets, seed=seed)
    calibration, evaluation = calibration_sets(original)
    # Every materialised variant is verified against the same original and canonical model (run them
    # once), and variants often start with the same step (apply it once).
    shared = (ModelOutputs(evaluation), AppliedPrefixes())
    t0 = time.perf_counter()
    feasible = np.flatnonzero(objective.violation(all_figures) == 0)
    ok_rows = rows[feasible]
    if pick is not None:
        ranked = [candidate(f"picked {pick}", _picked(pareto, pick, objective))]
    else:
        ranked = [candidate(f"finalist {i + 1}", ok_rows[j]) for i, j in enumerate(_diverse(ok_rows, finalists))]
    failure: list[str] = []
    best: Candidate | None = None
    if not ranked:
        nearest = candidate("nearest", rows[int(np.argmin(objective.violation(all_figures)))])
        failure = objective.shortfall(nearest.figures) or ["no variant within the budgets"]
        failure = [f"no variant meets the budgets ({problem.evaluated:,} evaluated); the nearest: " + "; ".join(failure)]
    tried = {c.decisions for c in ranked}
    for cand in ranked:
        if _accept(cand, budgets, original, canonical, calibration, evaluation, seed, progress, shared):
            best = cand
            break
    if ranked and best is None:
        # Deviation back-off: search again with fewer inexact rules, most aggressive first, and try the
        # best of each (the same kernel tables: only the allowed options shrink).
        # Levels: fewer rules, then at most c/2, c/4, ..., 0 inexact decisions (c: the fastest's count).
        # Each level's best is a candidate; candidates are tried fastest first.
        count = sum(not v.options[d].exact and not v.pinned for v, d in zip(space.variables, ranked[0].decisions))
        limits = [count >> i for i in range(1, max(count.bit_length(), 1) + 1)]
        levels = [(n, k, None) for n, k in BACKOFF] + [(f"at most {k} inexact decisions", None, k)
                                                       for k in dict.fromkeys(limits)]
        backoff: list[Candidate] = []
        for level, keep, max_inexact in levels:
            restrict = None
            if keep is not None:
                restrict = [[i for i in v.allowed if v.pinned or keep(v.options[i])] for v in space.variables]
                if restrict == [v.allowed for v in space.variables]:
                    continue  # this rule set has nothing this level would take away
            sub = Problem(space, vm, objective, seed=seed, progress=progress, restrict=restrict,
                          max_inexact=max_inexact)
            sub.evaluate(sub.start[None])
            run_strategy(resolve_strategy(strategy, space, sub.size), sub)
            sub_rows, sub_fit = sub.archive()
            need = max(2, len(space.variables) // 10)
            pick = next((r for r, f in zip(sub_rows, sub_fit) if f < INFEASIBLE
                         and all(sum(a != b for a, b in zip(r, t)) >= need for t in tried)), None)
            if pick is not None:
                cand = candidate(f"finalist ({level})", pick)
                tried.add(cand.decisions)
                backoff.append(cand)
        for cand in sorted(backoff, key=lambda c: c.figures["latency_us"]):
            ranked.append(cand)
            if _accept(cand, budgets, original, canonical, calibration, evaluation, seed, progress, shared):
                best = cand
                break
    if ranked and best is None:
        devs = ", ".join(f"{c.deviation:.4g}" for c in ranked)
        limit = f"--max-deviation {budgets.max_deviation:.4g}" if budgets.max_deviation is not None else "finite"
        failure = [f"no variant within the other budgets keeps the output deviation {limit}: {len(ranked)} "
                   f"materialised (fastest first, then with fewer inexact rules) deviate by {devs}; try calibration "
                   f"data (--calibration), or --exact-only"]
    if measure_finalists is None:
        measure_finalists = target.backend == "onnxruntime"
    if best is not None and measure_finalists and pick is None and len(ranked) > 1:
        best, original_us = _measure_finalists(ranked, best, canonical, target, lambda c: _accept(
            c, budgets, original, canonical, calibration, evaluation, seed, progress, shared))
        if best.measured_us >= original_us:  # nothing is faster for real: keep the original, and say so
            slower = best
            best = candidate("best", space.baseline)
            _materialise(best, original, canonical, calibration, evaluation, seed, progress, shared)
            best.measured_us = original_us
            best.note = (f"the original is kept: no finalist measured faster (fastest {slower.measured_us / 1000:.3f}"
                         f" ms vs {original_us / 1000:.3f} ms)")
    recovered: list = []
    if recover is not None and pick is None and ranked:
        from hwopt.search.recovery import recover_finalists

        t1 = time.perf_counter()
        best, recovered = recover_finalists(ranked, best, recover, canonical, calibration, evaluation, budgets, seed,
                                            progress)
        failure = [] if best is not None else failure
        timings["recover"] = time.perf_counter() - t1
    if best is not None:
        best.label = "best"
    timings["materialise"] = time.perf_counter() - t0
    # Side by side: baseline, each rule alone (where it helps), the best.
    side = [candidate("baseline", space.baseline)]
    side[0].deviation, side[0].exact = 0.0, True
    for rule in dict.fromkeys(o.choice.rule for v in space.variables for o in v.options if o.choice):
        alone = candidate(f"{rule} alone", rule_alone(space, vm, rule))
        side.append(alone)
        if not alone.steps:
            alone.note, alone.deviation = "helps nowhere on this target (estimated)", 0.0
        else:
            # Materialised (deviation, verified exactness) only on request and when a model is written:
            # it costs a full apply each.
            if compare_rules and best is not None:
                _materialise(alone, original, canonical, calibration, evaluation, seed, progress, shared)
    if best is not None:
        side.append(best)
    if measure:
        from hwopt.backends import model_measurer

        measurer = model_measurer(target)
        for row in side:
            if (row.result is None and row.steps) or row.measured_us is not None:
                continue  # not materialised (see --compare), or measured already
            model = row.result.model if row.result is not None else canonical
            row.measured_us = float(getattr(measurer(model, target), "latency_us"))
    timings["compare"] = time.perf_counter() - t0 - timings["materialise"]
    timings["total"] = time.perf_counter() - start
    result = OptimizeResult(model_path, target, cost_model.name, name, space, vm, budgets, problem.evaluated,
                            timings["search"], side, best, ranked, pareto, failure, timings, recovered)
    return result, (best.result.model if best is not None and best.result is not None else None)
