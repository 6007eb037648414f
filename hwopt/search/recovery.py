"""``optimize --recover``: recover the fastest finalists, keep the fastest that meets the budgets after.

A finalist that misses a budget as refit may meet it once its weights are
distilled from the original (``hwopt.recover``). Recovery costs minutes per
variant, so only a few are recovered: the fastest materialised finalists, no
slower than the variant chosen without recovery (which is among them: recovery
improves its fidelity too). Each is recovered on the calibration samples (its
share of the time budget) and judged on the held-out samples like every
finalist; the fastest that meets the budgets after recovery is written, else
the variant chosen without it. Torch is imported only here, only when asked.

With labelled calibration data (``hwopt.calibration.labels``), each finalist is retrained on the labels
too (``hwopt.recover.labels``) and the fidelity budget a recovered model must meet is the task's: held-out
accuracy against the labels at most ``max_accuracy_drop`` below the original's (agreement with the original
is still reported; a model trained on labels departs from the original where the original was wrong).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from hwopt.calibration.samples import Samples
from hwopt.fidelity.metrics import METRICS
from hwopt.request import Recovery
from hwopt.search.objective import Budgets, within


@dataclass
class Recovered:
    """One recovered finalist: task fidelity and rel-L2 before and after, on the held-out samples."""

    label: str
    latency_us: float  # estimated; recovery changes weights only
    metric: str  # the task metric's name (hwopt.fidelity.metrics: top1, cosine, ...)
    before: float
    after: float
    rel_l2_before: float
    rel_l2_after: float
    epochs: int
    seconds: float
    meets: bool
    accuracy: dict | None = None  # with labels: held-out accuracy of the original, before and after


    def to_dict(self) -> dict:
        clean = lambda v: v if math.isfinite(v) else None  # noqa: E731 - JSON has no NaN
        return {"label": self.label, "latency_us": self.latency_us, "metric": self.metric,
                "before": clean(self.before), "after": clean(self.after),
                "rel_l2_before": clean(self.rel_l2_before), "rel_l2_after": clean(self.rel_l2_after),
                "epochs": self.epochs, "seconds": round(self.seconds, 1), "meets_budgets": self.meets,
                **({"accuracy": self.accuracy} if self.accuracy is not None else {})}


def to_recover(ranked: list, best, count: int, beyond: list = ()) -> list:
    """The fastest ``count`` materialised finalists no slower than ``best`` (any when None), and the
    materialised ``beyond`` candidates (variants past the budget that recovery might bring back) faster
    than all of them, fastest first."""
    limit = best.figures["latency_us"] if best is not None else math.inf
    done = [c for c in ranked if c.result is not None and c.figures["latency_us"] <= limit + 1e-9]
    chosen = sorted(done, key=lambda c: c.figures["latency_us"])[:max(count, 1)]
    fastest = min((c.figures["latency_us"] for c in chosen), default=limit)
    extra = [c for c in beyond if c.result is not None and c.figures["latency_us"] < fastest - 1e-9
             and all(c.decisions != d.decisions for d in chosen)]
    return sorted(extra + chosen, key=lambda c: c.figures["latency_us"])


def recover_finalists(ranked: list, best, options: Recovery, canonical, calibration: Samples,
                      evaluation: Samples, budgets: Budgets, seed: int, progress,
                      log: Callable[[str], None] = lambda line: None,
                      verifier=None, beyond: list = (), labels: dict | None = None) -> tuple[object | None, list[Recovered]]:
    """(the variant to write, the recovered finalists): the fastest meeting the budgets after recovery,
    else ``best`` as it was. ``beyond``: materialised variants past the budget (``Recovery.reach``),
    recovered too when faster than the finalists. ``verifier`` (``hwopt.search.verifier.Verifier``): judges every recovered model
    on the held-out samples with the task metric and budget optimize uses, once per model (the winner's
    figure is kept on the candidate, not measured again); without it, the task metric is chosen from the
    outputs and a model meets the budgets when its rel-L2 is finite and within ``budgets.max_deviation``.
    ``labels``: ``CalibrationSplit.labels`` (class labels of ``calibration`` as "train" and of ``evaluation``
    as "held_out"): recovery trains on them and the accuracy budget decides (module docstring)."""
    from hwopt.recover import require_torch

    require_torch()
    from hwopt.recover.labels import TaskLabels
    from hwopt.recover.train import RecoverySettings, recover

    task = None if not labels else TaskLabels(labels["train"].values, labels["held_out"].values, options.label_weight)

    chosen = to_recover(ranked, best, options.finalists, beyond)
    share = None if options.seconds is None else options.seconds / max(len(chosen), 1)
    done: list[Recovered] = []
    winner = None
    for cand in chosen:
        settings = RecoverySettings(epochs=options.epochs, seconds=share, seed=seed, threads=options.threads)
        if verifier is not None:
            result = recover(canonical, cand.result.model, calibration, evaluation, settings, progress, log,
                             metric=verifier.metric, judge=verifier.measure, before=cand.fidelity, labels=task)
            meets = verifier.misses(result.after) is None
        else:
            result = recover(canonical, cand.result.model, calibration, evaluation, settings, progress, log,
                             labels=task)
            meets = result.after.finite and within(result.after.rel_l2, budgets.max_deviation)
        acc = result.accuracy
        if acc is not None:  # the task's budget replaces agreement with the original (module docstring)
            meets = result.after.finite and acc.after >= acc.original - options.max_accuracy_drop - 1e-12
        before, after = result.before, result.after
        done.append(Recovered(cand.label, cand.figures["latency_us"], after.metric, before.value, after.value,
                              before.rel_l2, after.rel_l2, len(result.history), result.seconds, meets,
                              acc.to_dict() if acc is not None else None))
        if meets and (winner is None or cand.figures["latency_us"] < winner.figures["latency_us"]):
            winner = cand
            cand.result.model, cand.deviation, cand.fidelity = result.model, after.rel_l2, after
            cand.note = (f"recovered: {METRICS[after.metric].label} {before.value:.1%} -> {after.value:.1%}, "
                         f"rel L2 {before.rel_l2:.3g} -> {after.rel_l2:.3g}")
            if acc is not None:
                cand.note += (f"; accuracy against the labels {acc.before:.1%} -> {acc.after:.1%} "
                              f"(original {acc.original:.1%})")
    return (winner if winner is not None else best), done
