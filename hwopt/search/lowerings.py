"""Lowerings: exact rewrites no estimator can price, judged on whole models by the target's judge.

A lowering (``Rule.lowering``, ``[lower.NAME]`` in rule files) keeps every kernel's geometry and changes
how an op is lowered (``prelu-to-dwconv``: a PReLU's slope as depthwise weights instead of a broadcast
product). The per-kernel estimators describe kernels by geometry, so they cannot say whether it pays;
the target's whole-model judge can (Vela: deterministic, one compile). So after the search has picked
(the original when nothing was worth writing), the lowerings are applied on top of the pick, the result
is verified like any variant (exact, within the fidelity budget) and compiled whole, and it replaces the
pick only when it is faster by the floor (``--min-gain``). On a target timed on this host (onnxruntime)
no lowering is tried: one timing is not a verdict there, and the rules target accelerators.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from hwopt.errors import HwoptError
from hwopt.rewrites import get_rule
from hwopt.rewrites.ruleset import RuleStep


def lowering_steps(lowerings: dict[str, list[str]]) -> list[RuleStep]:
    return [RuleStep(name, get_rule(name).parse_params({}), list(sites), f"[lower.{name}]")
            for name, sites in lowerings.items()]


def apply_lowerings(best, canonical, target, lowerings: dict[str, list[str]], min_gain: float,
                    verify: Callable[[Any], bool]) -> tuple[Any, dict[str, Any] | None]:
    """(the candidate to write, what was tried: a dict for the report, or None when nothing applied).

    ``best``: the search's pick (a ``Candidate``; its ``steps`` empty when the original is kept);
    ``verify``: materialises a candidate from its steps and checks the fidelity budget (``optimize.verify``).
    """
    from hwopt.backends import FINALIST_JUDGES, model_measurer

    if not lowerings or best is None or target.backend not in FINALIST_JUDGES or target.backend == "onnxruntime":
        return best, None
    lowered = dataclasses.replace(best, label="best", steps=list(best.steps) + lowering_steps(lowerings),
                                  result=None, note="", measured_us=None)
    if not verify(lowered) or lowered.result is None:
        return best, {"rules": sorted(lowerings), "taken": False, "why": f"not within the budget: {lowered.note}"}
    applied = [(s.step.rule, len(s.applied)) for s in lowered.result.steps[len(best.steps):] if s.applied]
    if not applied:
        return best, None  # no site here (no PReLU): nothing to say
    measurer = model_measurer(target)
    before_model = best.result.model if best.steps and best.result is not None else canonical
    before_us = best.measured_us if best.steps and best.measured_us is not None else \
        float(measurer(before_model, target).latency_us)
    sites = ", ".join(f"{rule} at {n} site(s)" for rule, n in applied)
    try:
        after_us = float(measurer(lowered.result.model, target).latency_us)
    except HwoptError as exc:  # the judge refuses the lowered model: keep the pick, say why
        return best, {"rules": sorted(lowerings), "sites": sites, "taken": False,
                      "why": f"the judge could not measure it: {exc}"}
    change = after_us / before_us - 1.0
    taken = change <= -min_gain
    what = "the search's pick" if best.steps else "the original"
    figures = {"rules": sorted(lowerings), "sites": sites, "on": what, "before_us": before_us, "after_us": after_us,
               "change": change, "taken": taken, "judge": target.backend,
               "why": (f"{sites} on {what}: {change:+.1%} by {target.backend} "
                       f"({before_us / 1000:.3f} -> {after_us / 1000:.3f} ms); "
                       + ("taken" if taken else f"not taken (floor {min_gain:.1%}, --min-gain)"))}
    if not taken:
        return best, figures
    lowered.measured_us = after_us
    lowered.note = (best.note + "; " if best.note and best.steps else "") + figures["why"] + \
        " (a lowering: judged by the target's compiler, not estimated)"
    return lowered, figures
