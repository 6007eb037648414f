"""Applying rule steps in order, each verified with onnxruntime against its input.

Exact rules must reproduce their input's outputs within the exact tolerance
or the whole apply fails with the observed error; inexact rules report the
relative L2 error, cosine similarity and (for class scores) top-1 agreement of
every output, per step and for the final model against the original.
"""

from __future__ import annotations

import fnmatch
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

from hwopt.errors import HwoptError, VerificationError, warn
from hwopt.fidelity.metrics import Fidelity, Metric, choose_metric, measure
from hwopt.analysis.metrics import ModelMetrics, model_metrics
from hwopt.rewrites import RewriteContext, SiteOutcome, get_rule
from hwopt.rewrites.ruleset import RuleStep
from hwopt.analysis.sites import Analysis, Site, SiteIds, is_glob
from hwopt.fidelity.verify import Comparison, ModelOutputs, compare_models, reference_outputs


@dataclass
class StepResult:
    step: RuleStep
    exact: bool
    applied: list[SiteOutcome]
    skipped: list[tuple[str, str]]  # (site id, why not)
    comparison: Comparison | None  # against the step's input; None when nothing was applied
    metrics: ModelMetrics
    seconds: float


@dataclass
class ApplyResult:
    model: onnx.ModelProto
    before: ModelMetrics
    after: ModelMetrics
    steps: list[StepResult] = field(default_factory=list)
    final: Comparison | None = None  # final model against the original
    fidelity: Fidelity | None = None  # task fidelity of the final model vs the original (held-out inputs)

    @property
    def exact(self) -> bool:
        return all(step.exact for step in self.steps if step.applied)


def _choose_sites(step: RuleStep, analysis: Analysis, ids: SiteIds) -> tuple[list[Site], list[tuple[str, str]]]:
    rule = get_rule(step.rule)
    if step.sites:
        candidates = analysis.select(step.sites, rule.site_kind, ids)
        explicit = {s for s in step.sites if not is_glob(s)}
        for pattern in step.sites:
            if is_glob(pattern) and not any(fnmatch.fnmatchcase(s.id, pattern) for s in candidates):
                # Not an error: rule files with globs are reused across models; but a typo must not pass unseen.
                existing = [s.id for s in analysis.of_kind(rule.site_kind)]
                shown = ", ".join(existing[:8]) + (f", ... ({len(existing)} in all)" if len(existing) > 8 else "")
                warn(f"{step.source or step.rule}: {pattern!r} matches no {rule.site_kind} site "
                     f"({rule.site_kind} sites here: {shown or 'none'})")
    else:
        candidates, explicit = rule.find_sites(analysis), set()
    chosen, skipped = [], []
    for site in candidates:
        reason = rule.check(site, step.params, analysis)
        if reason is None:
            chosen.append(site)
        elif site.id in explicit:
            raise HwoptError(f"{step.rule} cannot apply at {site.id}: {reason}")
        elif not any(fnmatch.fnmatchcase(site.id, p) for p in explicit):
            skipped.append((site.id, reason))
    return chosen, skipped


class AppliedPrefixes:
    """Step sequences already applied to one canonical model, with one calibration set and seed.

    ``optimize`` materialises several variants whose step lists often start alike (the best variant's
    width step is the "depth-multiplier alone" row, say). A step's result depends only on its input
    model, the step, the calibration and evaluation sets and the seed, so a shared prefix is applied
    (and verified) once. The ``size`` most recent prefixes are kept (each holds a model).
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._owner: tuple | None = None  # (canonical, calibration, evaluation, seed) they were applied with
        self._done: dict[tuple[str, ...], tuple[onnx.ModelProto, StepResult, SiteIds]] = {}

    def usable(self, canonical, calibration, evaluation, seed: int) -> bool:
        owner = (canonical, calibration, evaluation, seed)
        if self._owner is None:
            self._owner = owner
        return all(a is b for a, b in zip(self._owner[:3], owner[:3])) and self._owner[3] == seed

    def get(self, key: tuple[str, ...]):
        return self._done.get(key)

    def put(self, key: tuple[str, ...], model: onnx.ModelProto, step: StepResult, ids: SiteIds) -> None:
        self._done[key] = (model, step, ids)
        while len(self._done) > self.size:
            del self._done[next(iter(self._done))]


def apply_steps(
    original: onnx.ModelProto,
    canonical: onnx.ModelProto,
    steps: list[RuleStep],
    calibration: dict[str, np.ndarray],
    evaluation: dict[str, np.ndarray],
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    on_step: Callable[[RuleStep], None] | None = None,
    outputs: ModelOutputs | None = None,
    prefixes: AppliedPrefixes | None = None,
    metric: Metric | str = "auto",
) -> ApplyResult:
    """Apply ``steps`` to the canonical model; verify each step and the result against the original.

    ``outputs``: model outputs on ``evaluation`` already known (shared by calls on the same original).
    ``prefixes``: step sequences already applied by earlier calls with the same models, data and seed.
    ``metric``: the task fidelity metric of ``result.fidelity`` (``auto``: chosen from the outputs).
    """
    if prefixes is not None and not prefixes.usable(canonical, calibration, evaluation, seed):
        prefixes = None
    # Each step's output model is the next step's input: run every model once.
    outputs = outputs if outputs is not None and outputs.inputs is evaluation else ModelOutputs(evaluation)
    if steps:
        reference_outputs(original, outputs, "the evaluation inputs")
    ids = Analysis(canonical).site_ids
    current = canonical
    before = model_metrics(Analysis(canonical).graph)
    result = ApplyResult(model=canonical, before=before, after=before)
    ctx = RewriteContext(calibration=calibration, evaluation=evaluation, seed=seed, progress=progress)
    for number, step in enumerate(steps, 1):
        if on_step is not None:
            on_step(step)
        key = tuple(s.label() for s in steps[:number])
        done = prefixes.get(key) if prefixes is not None else None
        if done is not None:
            current, step_result, ids = done
            result.steps.append(step_result)
            continue
        start = time.perf_counter()
        rule = get_rule(step.rule)
        analysis = Analysis(current, ids)
        sites, skipped = _choose_sites(step, analysis, ids)
        exact = rule.is_exact(step.params)
        if not sites:
            result.steps.append(StepResult(step, exact, [], skipped, None, model_metrics(analysis.graph),
                                           time.perf_counter() - start))
            if prefixes is not None:
                prefixes.put(key, current, result.steps[-1], ids)
            continue
        rewritten, outcomes = rule.apply(analysis, sites, step.params, ctx)
        comparison = compare_models(current, rewritten, evaluation, outputs)
        if not math.isfinite(comparison.worst_rel_l2):
            raise VerificationError(f"{step.label()} made the outputs non-finite (NaN or Inf) on the evaluation "
                                    f"inputs: nothing is written")
        if exact and not comparison.exact:
            raise VerificationError(
                f"{step.rule} is exact but changed the outputs: relative max-abs error "
                f"{comparison.worst_rel_max_abs:.2e} (please report this model)"
            )
        ids = {**Analysis(rewritten, ids).site_ids, **ids}
        current = rewritten
        result.steps.append(StepResult(step, exact, outcomes, skipped, comparison,
                                       model_metrics(Analysis(current).graph), time.perf_counter() - start))
        if prefixes is not None:
            prefixes.put(key, current, result.steps[-1], ids)
    result.model = current
    result.after = result.steps[-1].metrics if result.steps else before
    check_written_model(original, current)
    result.final = compare_models(original, current, evaluation, outputs)
    if not math.isfinite(result.final.worst_rel_l2):
        raise VerificationError("the rewritten model's outputs are non-finite (NaN or Inf) on the evaluation inputs: "
                                "nothing is written")
    reference = outputs.of(original)
    if isinstance(metric, str):
        metric = choose_metric({n: v.shape for n, v in reference.items()}, metric)
    result.fidelity = measure({o.name: reference[o.name] for o in original.graph.output}, outputs.of(current), metric)
    return result


def check_written_model(original: onnx.ModelProto, model: onnx.ModelProto) -> None:
    """The contract of every written model: full checker, loads in onnxruntime, same signature."""
    from hwopt.io import held_weights

    try:
        held_weights.shrink(model)
        if held_weights.has_held(model):  # weights outside the proto: checked by path, their data sparse
            with held_weights.checkable(model) as path:
                onnx.checker.check_model(path, full_check=True)
        else:
            onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # checker raises ValidationError and InferenceError
        raise VerificationError(f"the rewritten model fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    try:
        if not held_weights.has_held(model):  # a held model was just run by the verification: it loads
            options = ort.SessionOptions()
            options.log_severity_level = 4  # the failure becomes one line of ours
            held_weights.inference_session(model, options)
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise VerificationError(f"onnxruntime cannot load the rewritten model: {str(exc).splitlines()[0]}") from None
    initializers = {t.name for t in original.graph.initializer}
    for kind, ours, theirs in (("input", model.graph.input, original.graph.input),
                               ("output", model.graph.output, original.graph.output)):
        want = [v for v in theirs if v.name not in initializers]
        if [v.SerializeToString() for v in ours] != [v.SerializeToString() for v in want]:
            raise VerificationError(f"the rewritten model's graph {kind}s differ from the original's")
