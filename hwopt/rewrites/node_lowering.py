"""The shape every lowering rule shares: one node replaced by a few others computing the same function.

A lowering (``Rule.lowering``) changes how one op is lowered by a target's compiler, never a kernel's
geometry, and is exact. Subclasses say per site what they would write (``plan``: a value, or why not, which
is also ``check``'s reason for the user) and write it (``replacement``); this class detaches the node and
cleans the graph up.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import onnx
import onnx_graphsurgeon as gs

from hwopt.analysis.graph import export_graph
from hwopt.analysis.sites import Analysis, Site
from hwopt.rewrites.base import Rule, RewriteContext, SiteOutcome


def one_per_channel(value, channels: int):
    """``value`` as one float32 per channel when it is shaped (C, 1, 1) (leading 1s allowed), else None."""
    squeezed = value.reshape(value.shape[-3:]) if value.ndim > 3 and all(d == 1 for d in value.shape[:-3]) \
        else value
    if squeezed.ndim == 3 and squeezed.shape == (channels, 1, 1):
        return squeezed.reshape(channels).astype("float32")
    return None


class NodeLowering(Rule):
    params = ()
    lowering = True

    def is_exact(self, params: dict[str, Any]) -> bool:
        return True

    @abstractmethod
    def plan(self, site: Site) -> tuple[Any, str | None]:
        """(what the replacement needs, None), or (None, why this site cannot be lowered)."""

    @abstractmethod
    def replacement(self, node: gs.Node, plan: Any) -> tuple[list[gs.Node], str]:
        """The nodes that compute ``node``'s output from its inputs instead, and a line on what they are."""

    def check(self, site: Site, params: dict[str, Any], analysis: Analysis) -> str | None:
        return self.plan(site)[1]

    def apply(
        self, analysis: Analysis, sites: list[Site], params: dict[str, Any], ctx: RewriteContext
    ) -> tuple[onnx.ModelProto, list[SiteOutcome]]:
        graph = analysis.graph
        outcomes = []
        for site in sites:
            node = site.target.node
            plan, _ = self.plan(site)
            assert plan is not None
            nodes, detail = self.replacement(node, plan)
            node.outputs = []  # detached: cleanup removes it
            graph.nodes += nodes
            outcomes.append(SiteOutcome(site.id, detail))
        graph.cleanup().toposort()
        return export_graph(graph, analysis.model), outcomes
