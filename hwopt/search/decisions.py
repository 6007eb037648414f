"""The single-site decisions a search can take, each with the kernels it changes and its estimated effect.

A decision is one variable of the space (a block, a depthwise conv, a channel
group, the global depth multiplier) moved from the original to one of its
options, every other site left as it is. Its effect on latency is the change
in the slots it touches (``VariantModel.kernels``): the kernels ``before`` it
replaces and the ones ``after`` it writes. On a target whose ground truth is a
sum over kernels (npu32), measuring those kernels alone measures the
decision's whole change (``bench/decision_accuracy.py``); the estimator's
figure is the same difference over its per-slot tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwopt.analysis.kernel import Kernel
from hwopt.search.space import Space
from hwopt.search.variants import VariantModel


@dataclass(frozen=True)
class SiteDecision:
    site: str  # the variable's id (block, depthwise conv, channel group, "depth-multiplier")
    rule: str
    option: str  # the option's label
    exact: bool
    decisions: tuple[int, ...]  # the variant: the baseline with this one site changed
    before: tuple[Kernel, ...]  # kernels of the changed slots in the original (views included)
    after: tuple[Kernel, ...]  # what the decision puts there (a fused block: one kernel fewer)
    estimated_us: float  # estimated change of the model's latency (negative: faster)

    @property
    def label(self) -> str:
        return f"{self.site}: {self.option}"


def site_decisions(space: Space, vm: VariantModel) -> list[SiteDecision]:
    """Every option of every variable, alone on the baseline (pinned variables excluded)."""
    base = np.array(space.baseline, dtype=np.int64)
    base_kernels = vm.kernels(tuple(int(x) for x in base))
    base_latency = float(vm.latency(base[None])[0])
    out = []
    for vi, var in enumerate(space.variables):
        if var.pinned:
            continue
        for oi in range(1, var.size):
            option = var.options[oi]
            row = base.copy()
            row[vi] = oi
            decisions = tuple(int(x) for x in row)
            kernels = vm.kernels(decisions)
            changed = [i for i, (a, b) in enumerate(zip(base_kernels, kernels)) if a != b]
            out.append(SiteDecision(
                var.id, option.choice.rule if option.choice else "original", option.label, option.exact, decisions,
                tuple(base_kernels[i] for i in changed if base_kernels[i] is not None),
                tuple(kernels[i] for i in changed if kernels[i] is not None),
                float(vm.latency(row[None])[0]) - base_latency))
    return out


class _Unscored:
    """A cost model that scores nothing (the kernels alone are wanted)."""

    name = "none"

    def predict(self, kernels) -> np.ndarray:
        return np.zeros(len(kernels))


def decision_kernels(canonical, target, rules_path=None) -> list[Kernel]:
    """The kernels a search's single-site decisions write on a canonical model (the default rule set's
    options, or ``rules_path``'s), without the ones the model already has, smallest work first: what the
    estimator must be right about for the search to choose well (``hwopt profile --decisions``)."""
    from hwopt.search.config import default_rules_path, load_search_file
    from hwopt.search.space import build_space
    from hwopt.analysis.sites import Analysis

    config = load_search_file(rules_path or default_rules_path())
    analysis = Analysis(canonical)
    space = build_space(analysis, config, config.p or target.parallelism)
    vm = VariantModel(analysis, space, target.fusion, target.dtype_bytes, _Unscored())
    have = set(vm.kernels(space.baseline))
    found = dict.fromkeys(k for d in site_decisions(space, vm) for k in d.after if k not in have)
    return sorted(found, key=lambda k: (k.macs, k.in_elements + k.out_elements))
