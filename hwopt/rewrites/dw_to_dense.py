"""dw-to-dense: a depthwise conv becomes a standard conv with block-diagonal weights (exact).

Accelerators with wide channel parallelism often run a dense KxK conv faster
than a depthwise one, which uses one lane per channel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hwopt.graph import constant_value, export_graph
from hwopt.rewrites.base import RewriteContext, Rule, SiteOutcome
from hwopt.sites import Analysis, Site


def block_diagonal(weight: np.ndarray, group: int) -> np.ndarray:
    """Dense (M, C, kh, kw) weights equivalent to a grouped conv's (M, C/group, kh, kw)."""
    out_channels, per_group, kh, kw = weight.shape
    dense = np.zeros((out_channels, per_group * group, kh, kw), dtype=weight.dtype)
    outputs_per_group = out_channels // group
    for g in range(group):
        rows = slice(g * outputs_per_group, (g + 1) * outputs_per_group)
        dense[rows, g * per_group:(g + 1) * per_group] = weight[rows]
    return dense


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
        outcomes = []
        for site in sites:
            node = site.target.node
            attrs = site.target.attrs
            dense = block_diagonal(constant_value(node.inputs[1]), attrs.group)
            node.inputs[1] = gs.Constant(f"{node.name}_W_dense", dense)
            node.attrs["group"] = 1
            outcomes.append(SiteOutcome(
                site.id,
                f"{attrs.in_channels} ch k{attrs.kernel[0]} s{attrs.strides[0]}: "
                f"{attrs.in_channels * attrs.kernel[0] * attrs.kernel[1]} -> {dense.size} weights",
            ))
        return export_graph(analysis.graph, analysis.model), outcomes
