"""Materialising variants and judging them on the held-out samples, against the fidelity budget.

One ``Verifier`` per optimize run: the original's outputs on the held-out samples are
computed once, variants sharing a first step apply it once (``AppliedPrefixes``), and
every model is judged the same way (``hwopt.fidelity.metrics``). It is also the hook for
whatever improves a materialised model's weights afterwards (recovery): ``measure``
re-verifies any model of the same signature, ``misses`` says why it fails the budget.
"""

from __future__ import annotations

from typing import Callable

import onnx

from hwopt.rewrites.apply import AppliedPrefixes, ApplyResult, apply_steps
from hwopt.calibration.samples import CalibrationSplit
from hwopt.fidelity.metrics import Fidelity, FidelityBudget, Metric, choose_metric, measure
from hwopt.rewrites.ruleset import RuleStep
from hwopt.fidelity.verify import ModelOutputs

Progress = Callable[[str, int, int], None]


class Verifier:
    def __init__(self, original: onnx.ModelProto, canonical: onnx.ModelProto, split: CalibrationSplit,
                 metric: Metric | str = "auto", budget: FidelityBudget | None = None, seed: int = 0,
                 progress: Progress | None = None) -> None:
        """``metric``: a metric or its name (``auto``: chosen from the original's outputs); ``budget``:
        None checks finiteness only (set it once the metric is known)."""
        self.original, self.canonical, self.split = original, canonical, split
        self.seed, self.progress = seed, progress
        # Dense outputs (segmentation maps) are large: remember only the step input, its output and one more.
        self.outputs = ModelOutputs(split.held_out, size=3)
        self.prefixes = AppliedPrefixes()
        names = [o.name for o in original.graph.output]
        run = self.outputs.of(original)
        self.reference = {n: run[n] for n in names}
        if isinstance(metric, str):
            metric = choose_metric({n: v.shape for n, v in self.reference.items()}, metric)
        self.metric = metric
        self.budget = budget or FidelityBudget(metric, None)
        self.groups = split.held_groups  # independent units of the held-out samples (the bound's basis)

    @property
    def fit(self):
        return self.split.fit

    @property
    def held_out(self):
        return self.split.held_out

    def apply(self, steps: list[RuleStep], quiet: bool = False) -> ApplyResult:
        """The variant's model (weights refit on the fit samples), verified step by step, with its fidelity.

        ``quiet``: no progress of its own (inside a stage that reports its own, like the sensitivity stage)."""
        result = apply_steps(self.original, self.canonical, steps, self.split.fit, self.split.held_out,
                             seed=self.seed, progress=None if quiet else self.progress, outputs=self.outputs,
                             prefixes=self.prefixes, metric=self.metric)
        # With its lower confidence bound over the held-out units (the outputs are remembered: no rerun).
        result.fidelity = self.measure(result.model)
        return result

    def measure(self, model: onnx.ModelProto) -> Fidelity:
        """Task fidelity and rel-L2 of any model with the original's inputs and outputs (held-out samples)."""
        return measure(self.reference, self.outputs.of(model), self.metric, self.groups)

    def misses(self, fidelity: Fidelity, exact: bool = False) -> str | None:
        """Why a model with this fidelity fails the budget (None: it passes); an inexact one is judged by its
        lower confidence bound."""
        return self.budget.misses(fidelity, exact)
