"""align-channels: round a channel group to a multiple of the parallelism factor P.

``pad`` adds zero channels (zero weights and bias for producers, zero input
weights for consumers): exact, and free latency on a target that computes
ceil(C/P) lane groups anyway. ``trim`` drops the least important channels (L1
norm of their filters) down to a multiple of P and refits the consumers by
least squares on calibration data: inexact, but smaller and faster.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from hwopt.rewrites.channel_resize import pad_plan, refit_consumers, resize_group, trim_plan
from hwopt.analysis.graph import export_graph
from hwopt.rewrites.base import Param, RewriteContext, Rule, SiteOutcome
from hwopt.analysis.sites import Analysis, Site


def aligned_channels(channels: int, p: int, mode: str) -> int:
    return -(-channels // p) * p if mode == "pad" else (channels // p) * p


class AlignChannels(Rule):
    name = "align-channels"
    summary = "pad (exact) or trim (refit) a channel group to a multiple of the parallelism factor P"
    site_kind = "ch"
    params = (
        Param("p", int, 32, "parallelism factor: channel counts become multiples of it", minimum=1,
              maximum=1024),
        Param("mode", str, "pad", "pad with zero channels (exact) or trim and refit (inexact)",
              choices=("pad", "trim")),
        Param("ridge", float, 1e-3, "ridge strength of the consumer refit (trim)", minimum=0.0, maximum=1e6),
    )

    def is_exact(self, params: dict[str, Any]) -> bool:
        return params["mode"] == "pad"

    def check(self, site: Site, params: dict[str, Any], analysis: Analysis) -> str | None:
        group = site.target
        if group.blockers:
            return f"its channel count is fixed by {group.blockers[0]}"
        if group.channels % params["p"] == 0:
            return f"{group.channels} channels are already a multiple of {params['p']}"
        if aligned_channels(group.channels, params["p"], params["mode"]) == 0:
            return f"{group.channels} channels are fewer than p={params['p']}: nothing to keep"
        return None

    def apply(
        self, analysis: Analysis, sites: list[Site], params: dict[str, Any], ctx: RewriteContext
    ) -> tuple[onnx.ModelProto, list[SiteOutcome]]:
        rng = np.random.default_rng(ctx.seed)
        resized, outcomes = [], []
        for site in sites:
            group = site.target
            new = aligned_channels(group.channels, params["p"], params["mode"])
            plan = pad_plan(group.channels, new) if params["mode"] == "pad" else trim_plan(group, new)
            resized.append((group, plan))
            outcomes.append(SiteOutcome(site.id, f"{group.channels} -> {new} channels ({params['mode']})",
                                        {"channels_before": group.channels, "channels_after": new}))
        for index, (group, plan) in enumerate(resized):
            resize_group(group, plan, rng, tag=f"align{index}")
        if params["mode"] == "trim":
            refit_consumers(resized, analysis.model, True, ctx.calibration, params["ridge"], ctx.seed,
                            progress=ctx.report("align-channels: refit"))
        return export_graph(analysis.graph, analysis.model), outcomes
