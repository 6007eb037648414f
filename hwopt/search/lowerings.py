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


def apply_lowerings(best, canonical, analysis, target, lowerings: dict[str, list[str]], min_gain: float,
                    verify: Callable[[Any], bool],
                    progress: Callable[[str, int, int], None] | None = None) -> tuple[Any, dict[str, Any] | None]:
    """(the candidate to write, what was tried: a dict for the report, or None when nothing applied).

    ``best``: the search's pick (a ``Candidate``; its ``steps`` empty when the original is kept);
    ``analysis``: the canonical model's (``hwopt.analysis.sites.Analysis``), for the site kinds it has;
    ``verify``: materialises a candidate from its steps and checks the fidelity budget (``optimize.verify``).
    Each lowering is tried in the order of the rule file, on top of what was kept so far, and kept when the
    judge measures it faster by ``min_gain``: one that pays on a configuration is not held back by another
    that does not (Vela: on ethos-u85-256 a PReLU lowering can lose where a pad lowering wins).
    """
    from hwopt.backends import FINALIST_JUDGES, model_measurer

    if not lowerings or best is None or target.backend not in FINALIST_JUDGES or target.backend == "onnxruntime":
        return best, None
    measurer = model_measurer(target)
    what = "the search's pick" if best.steps else "the original"
    current, current_us, tried = best, None, []
    # A preset's lowering with no site of its kind in this model (no PReLU at all) is skipped silently; the
    # rules the search runs change no PReLU or Pad, so the original's sites are the pick's.
    kinds = {site.kind for site in analysis.sites.values()}
    lowerings = {name: sites for name, sites in lowerings.items() if get_rule(name).site_kind in kinds}
    stage = f"lowerings judged by {target.backend}"
    for done, (name, sites) in enumerate(lowerings.items()):
        if progress is not None:  # each is a whole-model compile or two: seconds on a large detector
            progress(stage, done, len(lowerings))
        step = lowering_steps({name: sites})
        lowered = dataclasses.replace(current, label="best", steps=list(current.steps) + step,
                                      result=None, note="", measured_us=None)
        if not verify(lowered) or lowered.result is None:
            tried.append({"rule": name, "taken": False, "why": f"{name}: not within the budget: {lowered.note}"})
            continue
        applied = [len(s.applied) for s in lowered.result.steps[len(current.steps):] if s.applied]
        if not applied:
            continue  # no site here (no PReLU, no channel pad): nothing to say
        if current_us is None:
            before_model = best.result.model if best.steps and best.result is not None else canonical
            current_us = best.measured_us if best.steps and best.measured_us is not None else \
                float(measurer(before_model, target).latency_us)
            before_us = current_us
        try:
            after_us = float(measurer(lowered.result.model, target).latency_us)
        except HwoptError as exc:  # the judge refuses the lowered model: keep what we had, say why
            tried.append({"rule": name, "taken": False,
                          "why": f"{name} at {sum(applied)} site(s): the judge could not measure it: {exc}"})
            continue
        change = after_us / current_us - 1.0
        taken = change <= -min_gain
        tried.append({"rule": name, "sites": sum(applied), "before_us": current_us, "after_us": after_us,
                      "change": change, "taken": taken,
                      "why": (f"{name} at {sum(applied)} site(s): {change:+.1%} by {target.backend} "
                              f"({current_us / 1000:.3f} -> {after_us / 1000:.3f} ms); "
                              + ("taken" if taken else f"not taken (floor {min_gain:.1%}, --min-gain)"))})
        if taken:
            lowered.measured_us = after_us
            current, current_us = lowered, after_us
    if progress is not None and lowerings:
        progress(stage, len(lowerings), len(lowerings))
    if not tried:
        return best, None
    kept = [t["rule"] for t in tried if t["taken"]]
    figures: dict[str, Any] = {"rules": sorted(lowerings), "on": what, "tried": tried, "taken": bool(kept),
                               "judge": target.backend,
                               "why": f"on {what}: " + "; ".join(t["why"] for t in tried)}
    if current_us is not None:
        figures.update(before_us=before_us, after_us=current_us, change=current_us / before_us - 1.0)
    if len(kept) > 1:
        figures["why"] += f"; together {figures['change']:+.1%} ({before_us / 1000:.3f} -> {current_us / 1000:.3f} ms)"
    if kept:
        current.note = (best.note + "; " if best.note and best.steps else "") + figures["why"] + \
            " (lowerings: judged by the target's compiler, not estimated)"
    return (current if kept else best), figures
