"""dw-to-dense: a depthwise conv becomes a standard conv with block-diagonal weights (exact).

Accelerators with wide channel parallelism often run a dense KxK conv faster
than a depthwise one, which uses one lane per channel. It is dw-to-grouped
with every channel in one group.
"""

from __future__ import annotations

from typing import Any

import onnx

from hwopt.analysis.graph import export_graph
from hwopt.rewrites.base import RewriteContext, Rule, SiteOutcome
from hwopt.rewrites.dw_to_grouped import regroup_depthwise
from hwopt.analysis.sites import Analysis, Site


class DwToDense(Rule):
    name = "dw-to-dense"
    summary = "depthwise conv -> standard conv with block-diagonal weights"
    site_kind = "dw"
    params = ()

    def is_exact(self, params: dict[str, Any]) -> bool:
        return True

    def check(self, site: Site, params: dict[str, Any], analysis: Analysis) -> str | None:
        return None  # every depthwise conv with constant weights converts exactly

    def apply(
        self, analysis: Analysis, sites: list[Site], params: dict[str, Any], ctx: RewriteContext
    ) -> tuple[onnx.ModelProto, list[SiteOutcome]]:
        outcomes = [regroup_depthwise(site, site.target.attrs.in_channels, "dense") for site in sites]
        return export_graph(analysis.graph, analysis.model), outcomes
