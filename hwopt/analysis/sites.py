"""Sites: the named places where rules apply, with ids a person can type.

Ids are given once, on the canonical input model (``ibn3``, ``dw7``,
``ch:conv_12``), and each site is anchored to a node name (the depthwise conv
of a block, the first producer conv of a channel group). Later models in a
chain of rewrites keep those ids through the anchors, so ``--rule
fuse-ibn@ibn1 --rule dw-to-dense@dw5`` means the same convs as ``hwopt
inspect`` showed, even after fusion removed ``dw1``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Union

import onnx
import onnx_graphsurgeon as gs

from hwopt.analysis.affine_sites import AffineSite, find_affine
from hwopt.analysis.blocks import DepthwiseConv, IBNBlock, find_depthwise, find_ibn_blocks
from hwopt.analysis.channel_groups import ChannelGroup, find_channel_groups
from hwopt.analysis.pad_sites import PadSite, find_pads
from hwopt.analysis.prelu_sites import PReluSite, find_prelu
from hwopt.errors import HwoptError
from hwopt.analysis.graph import import_graph

SiteObject = Union[IBNBlock, DepthwiseConv, ChannelGroup, PReluSite, PadSite, AffineSite]


@dataclass
class Site:
    id: str
    kind: str  # "ibn", "dw", "ch", "prelu", "pad" or "affine"
    anchor: str  # the node name that identifies the site across rewrites
    target: SiteObject

    def describe(self) -> str:
        return self.target.describe() if hasattr(self.target, "describe") else ""


SiteIds = dict[tuple[str, str], str]  # (kind, anchor) -> id


class Analysis:
    """A model's graph with its IBN blocks, depthwise convs, channel groups, PReLUs, Pads and per-channel
    constant Mul/Adds, by site id."""

    def __init__(self, model: onnx.ModelProto, ids: SiteIds | None = None) -> None:
        self.model = model
        self.graph: gs.Graph = import_graph(model)
        self.depthwise: list[DepthwiseConv] = find_depthwise(self.graph)
        self.blocks: list[IBNBlock] = find_ibn_blocks(self.graph, self.depthwise)
        self.groups: list[ChannelGroup] = find_channel_groups(self.graph)
        self.sites: dict[str, Site] = {}
        for block in self.blocks:
            self._add("ibn", block.depthwise.name, block, block.id, ids)
        for dw in self.depthwise:
            self._add("dw", dw.node.name, dw, dw.id, ids)
        for group in self.groups:
            self._add("ch", group.producers[0].name, group, group.id, ids)
        self.prelus: list[PReluSite] = find_prelu(self.graph)
        for prelu in self.prelus:
            self._add("prelu", prelu.node.name, prelu, prelu.id, ids)
        self.pads: list[PadSite] = find_pads(self.graph)
        for pad in self.pads:
            self._add("pad", pad.node.name, pad, pad.id, ids)
        self.affines: list[AffineSite] = find_affine(self.graph)
        for affine in self.affines:
            self._add("affine", affine.node.name, affine, affine.id, ids)

    def _add(self, kind: str, anchor: str, target: SiteObject, fresh_id: str, ids: SiteIds | None) -> None:
        site_id = fresh_id if ids is None else ids.get((kind, anchor))
        if site_id is None:
            # Only channel groups can be new (a fused conv producing a new group): name them freshly.
            if kind != "ch":
                return
            site_id = fresh_id
        target.id = site_id  # type: ignore[union-attr]
        self.sites[site_id] = Site(site_id, kind, anchor, target)

    @property
    def site_ids(self) -> SiteIds:
        return {(s.kind, s.anchor): s.id for s in self.sites.values()}

    def of_kind(self, kind: str) -> list[Site]:
        return [s for s in self.sites.values() if s.kind == kind]

    def select(self, patterns: list[str], kind: str, all_ids: SiteIds | None = None) -> list[Site]:
        """Sites of ``kind`` matching ids or globs; an unknown id is an error naming what exists.

        A glob that matches nothing is not an error: rule files with globs are reused across models.
        """
        chosen: dict[str, Site] = {}
        candidates = self.of_kind(kind)
        for pattern in patterns:
            matched = [s for s in candidates if fnmatch.fnmatchcase(s.id, pattern)]
            if not matched and not is_glob(pattern):
                known = all_ids is not None and pattern in all_ids.values()
                if known:
                    raise HwoptError(f"site {pattern!r} no longer exists here (an earlier rule rewrote it)")
                raise HwoptError(f"unknown {kind} site {pattern!r}: " + _known(candidates))
            for site in matched:
                chosen[site.id] = site
        order = list(self.sites)
        return sorted(chosen.values(), key=lambda s: order.index(s.id))


def is_glob(pattern: str) -> bool:
    return bool(set("*?[") & set(pattern))


def _known(sites: list[Site]) -> str:
    if not sites:
        return "this model has none"
    ids = [s.id for s in sites]
    shown = ", ".join(ids[:8]) + (f", ... ({len(ids)} in all)" if len(ids) > 8 else "")
    return f"known: {shown} (see 'hwopt inspect')"
