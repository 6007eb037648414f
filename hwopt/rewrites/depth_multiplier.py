"""depth-multiplier: scale the hidden (expansion) width of IBN blocks by a ratio.

The new width is ratio x hidden, rounded to a multiple of P (at least P). A
smaller width drops the least important hidden channels; a larger one adds
copies of the most important ones with noise. Either way the project conv (and
the SE reduce conv) are refit by least squares on calibration data: inexact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from hwopt.rewrites.channel_resize import refit_consumers, resize_group, resize_plan
from hwopt.analysis.graph import export_graph
from hwopt.rewrites.base import Param, RewriteContext, Rule, SiteOutcome
from hwopt.analysis.sites import Analysis, Site


def scaled_channels(channels: int, ratio: float, p: int) -> int:
    return max(p, int(round(channels * ratio / p)) * p)


class DepthMultiplier(Rule):
    name = "depth-multiplier"
    summary = "scale IBN hidden width by a ratio, rounded to multiples of P, refit the project conv"
    site_kind = "ibn"
    params = (
        Param("ratio", float, 0.75, "multiplier of the block's hidden (expansion) width", minimum=0.05,
              maximum=4.0),
        Param("p", int, 32, "round the new width to a multiple of this parallelism factor", minimum=1,
              maximum=1024),
        Param("ridge", float, 1e-3, "ridge strength of the refit", minimum=0.0, maximum=1e6),
    )

    def is_exact(self, params: dict[str, Any]) -> bool:
        return False

    def check(self, site: Site, params: dict[str, Any], analysis: Analysis) -> str | None:
        block = site.target
        if block.expand is None:
            return "the block has no expand conv: its width is its input's"
        group = _hidden_group(analysis, block)
        if group is None:
            return "the hidden channels are not a channel group of their own"
        if group.blockers:
            return f"its hidden width is fixed by {group.blockers[0]}"
        if scaled_channels(group.channels, params["ratio"], params["p"]) == group.channels:
            return f"width {group.channels} stays the same at ratio {params['ratio']} with p={params['p']}"
        return None

    def apply(
        self, analysis: Analysis, sites: list[Site], params: dict[str, Any], ctx: RewriteContext
    ) -> tuple[onnx.ModelProto, list[SiteOutcome]]:
        rng = np.random.default_rng(ctx.seed)
        resized, outcomes = [], []
        for site in sites:
            group = _hidden_group(analysis, site.target)
            new = scaled_channels(group.channels, params["ratio"], params["p"])
            resized.append((group, resize_plan(group, new)))
            outcomes.append(SiteOutcome(site.id, f"hidden {group.channels} -> {new} channels",
                                        {"channels_before": group.channels, "channels_after": new}))
        shrinking = [(g, p) for g, p in resized if p.added == 0]
        growing = [(g, p) for g, p in resized if p.added > 0]
        for index, (group, plan) in enumerate(resized):
            resize_group(group, plan, rng, tag=f"dm{index}")
        progress = ctx.report("depth-multiplier: refit")
        if shrinking:
            refit_consumers(shrinking, analysis.model, True, ctx.calibration, params["ridge"], ctx.seed, progress)
        if growing:
            # New channels have zero consumer weights, so this model is still exact: fit on its tensors.
            extended = export_graph(analysis.graph, analysis.model)
            refit_consumers(growing, extended, False, ctx.calibration, params["ridge"], ctx.seed, progress)
        return export_graph(analysis.graph, analysis.model), outcomes


def _hidden_group(analysis: Analysis, block):
    for group in analysis.groups:
        if block.expand in group.producers:
            return group
    return None
