"""affine-to-dwconv: a per-channel constant Mul or Add, or a standalone BatchNormalization, applied by a 1x1
depthwise conv (exact).

``x * c`` becomes a depthwise conv with ``c`` as its weights; ``x + d`` one with weights 1 and ``d`` as its
bias. Both compute the same floats (a product by 1.0 and a sum with 0 are exact). A BatchNormalization
becomes one with its scale as weights and its shift as bias (exact up to float rounding, as folding it
into a conv is); the TFLite writer would lower it to a MUL and an ADD, two passes reading per-channel
constants. Arm's Vela lowers a
TFLite MUL or ADD with a constant operand broadcast over the map as an elementwise op reading that
constant, which on Ethos-U55 costs cycles per element; a depthwise conv holds it as weights or bias, read
once per pass. Whether it pays depends on the configuration (an age-and-gender net's ten such ops, Vela:
ethos-u55-256 -85.6%, ethos-u65-256 -60%, ethos-u85-256 +40.5%), and the estimators do not price the
lowered form: like the other lowerings, ``optimize`` applies it to its pick (or the original) and keeps it
only where the target's whole-model judge measures it faster (``hwopt.search.lowerings``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hwopt.analysis.affine_sites import BATCH_NORM
from hwopt.analysis.graph import constant_value, export_graph
from hwopt.analysis.sites import Analysis, Site
from hwopt.rewrites.base import RewriteContext, SiteOutcome
from hwopt.rewrites.node_lowering import NodeLowering, one_per_channel


def per_channel_constant(site: Site) -> tuple[np.ndarray | None, str | None]:
    """(one value per channel, None) or (None, why the constant cannot become depthwise weights); for a
    BatchNormalization (scale, shift) stacked as a (2, C) array."""
    operand, channels = site.target.operand, site.target.channels
    rank = len(operand.shape or ())
    if rank != 4:
        return None, f"its activation is {rank}-D (a 1x1 depthwise conv needs NCHW)"
    if channels is None:
        return None, "its activation's channel count is unknown"
    if site.target.node.op == BATCH_NORM:
        scale, shift = site.target.affine()
        if scale.shape != (channels,):
            return None, f"its statistics have shape {list(scale.shape)}, not one value per channel ({channels})"
        return np.stack([scale, shift]).astype("float32"), None
    value = site.target.constant
    if value.size == 1:
        return None, "its constant is one value for every channel (an NPU applies a scalar from a register)"
    per_channel = one_per_channel(value, channels)
    if per_channel is not None:
        return per_channel, None
    return None, f"its constant of shape {list(value.shape)} is not one value per channel (C, 1, 1)"


class AffineToDwconv(NodeLowering):
    name = "affine-to-dwconv"
    summary = ("per-channel constant Mul/Add or a standalone BatchNormalization -> a 1x1 depthwise conv (the "
               "constants as weights and bias)")
    site_kind = "affine"

    def plan(self, site: Site) -> tuple[np.ndarray | None, str | None]:
        return per_channel_constant(site)

    def apply(
        self, analysis: Analysis, sites: list[Site], params: dict[str, Any], ctx: RewriteContext
    ) -> tuple[onnx.ModelProto, list[SiteOutcome]]:
        """As every lowering, but a Mul site read only by an Add site becomes one conv with the Add's shift as bias."""
        graph = analysis.graph
        by_node = {site.target.node.name: site for site in sites}
        outputs = {t.name for t in graph.outputs}
        pairs: dict[str, Site] = {}  # Add node name -> the Mul site before it
        for site in sites:
            node = site.target.node
            out = node.outputs[0]
            if node.op != "Mul" or out.name in outputs or len(out.outputs) != 1:
                continue
            reader = out.outputs[0]
            if reader.op == "Add" and reader.name in by_node:
                pairs[reader.name] = site
        paired = {site.target.node.name for site in pairs.values()}
        outcomes = []
        for site in sites:
            node = site.target.node
            if node.name in paired:
                continue  # written with its Add
            plan, _ = self.plan(site)
            assert plan is not None
            mul = pairs.get(node.name)
            if mul is None:
                nodes, detail = self.replacement(node, plan)
            else:
                scale, _ = self.plan(mul)
                nodes, detail = self._scale_and_shift(mul.target.node, node, scale, plan)
                mul.target.node.outputs = []
                outcomes.append(SiteOutcome(mul.id, f"{detail} (with {site.id})"))
                detail = f"{detail} (with {mul.id})"
            node.outputs = []  # detached: cleanup removes it
            graph.nodes += nodes
            outcomes.append(SiteOutcome(site.id, detail))
        graph.cleanup().toposort()
        order = {site.id: i for i, site in enumerate(sites)}
        return export_graph(graph, analysis.model), sorted(outcomes, key=lambda o: order[o.site])

    @staticmethod
    def _scale_and_shift(mul: gs.Node, add: gs.Node, scale: np.ndarray, shift: np.ndarray) -> tuple[list[gs.Node], str]:
        return _depthwise(mul, scale, shift, add.outputs), f"{scale.size} ch: x * c + d as one 1x1 depthwise conv"

    def replacement(self, node: gs.Node, values: np.ndarray) -> tuple[list[gs.Node], str]:
        channels = values.shape[-1]
        if node.op == BATCH_NORM:
            scale, shift, form = values[0], values[1], "batch norm x * s + d"
        elif node.op == "Mul":
            scale, shift, form = values.reshape(channels), None, "x * c"
        else:
            scale, shift, form = np.ones(channels), values.reshape(channels), "x + d"
        return _depthwise(node, scale, shift, node.outputs), f"{channels} ch: {form} as a 1x1 depthwise conv"


def _depthwise(node: gs.Node, scale: np.ndarray, shift: np.ndarray | None, outputs: list) -> list[gs.Node]:
    """A 1x1 depthwise conv of ``node``'s activation input: weights ``scale``, bias ``shift`` (none when None),
    named after ``node``, writing ``outputs``."""
    x = next(t for t in node.inputs if constant_value(t) is None)
    channels = scale.size
    dtype = np.dtype(x.dtype) if x.dtype is not None else np.dtype(np.float32)
    inputs = [x, gs.Constant(f"{node.name}_dw_weight", scale.reshape(channels, 1, 1, 1).astype(dtype))]
    if shift is not None:
        inputs.append(gs.Constant(f"{node.name}_dw_bias", shift.reshape(channels).astype(dtype)))
    return [gs.Node("Conv", f"{node.name}_dw", {"group": channels, "kernel_shape": [1, 1]}, inputs, list(outputs))]
