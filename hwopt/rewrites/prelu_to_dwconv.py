"""prelu-to-dwconv: a PReLU's per-channel slope applied by a 1x1 depthwise conv (exact).

PReLU(x) = max(x, 0) + a * min(x, 0), a slope ``a`` per channel. Arm's Vela lowers a TFLite PRELU to an
elementwise MUL of the map by the slope broadcast from a constant, which on Ethos-U55 (Shared_Sram: the
constant in flash) is read per element: 72% of MediaPipe's iris landmark net on ethos-u55-256. A 1x1
depthwise conv carries the same slope as its weights, read once per pass. Two forms, both exact (one of
the two terms is exactly 0 for every element, so nothing is rounded differently):

- every slope <= 1: ``Max(x, a * x)``: one depthwise conv and one MAXIMUM;
- any slope above 1 (trained nets have them): ``Relu(x) + a * Min(x, 0)``: MINIMUM with 0, the depthwise
  conv, RELU and ADD (the form Vela lowers PRELU to, with the MUL replaced).

Whether it pays depends on the configuration (Vela, five MediaPipe models, ``bench/vela_lowerings.py``:
ethos-u55 -37..-69%, ethos-u65 -17..-42%, ethos-u85 -16..+1.5%), and the estimators do not price the
lowered form: ``optimize`` applies it to its pick (or the original) and lets the target's whole-model
judge decide (``hwopt.search.lowerings``).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from hwopt.analysis.sites import Site
from hwopt.rewrites.node_lowering import NodeLowering, one_per_channel


def per_channel_slope(site: Site) -> tuple[np.ndarray | None, str | None]:
    """(one slope per channel, None) or (None, why the slope cannot become depthwise weights)."""
    slope, channels = site.target.slope, site.target.channels
    if slope is None:
        return None, "its slope is computed, not a constant"
    if channels is None:
        return None, "its input's channel count is unknown"
    rank = len(site.target.node.inputs[0].shape)
    if rank != 4:
        return None, f"its input is {rank}-D (a 1x1 depthwise conv needs NCHW)"
    if slope.size == 1:
        return np.full(channels, float(slope.reshape(-1)[0]), np.float32), None
    per_channel = one_per_channel(slope, channels)
    if per_channel is not None:
        return per_channel, None
    return None, f"its slope of shape {list(slope.shape)} is not one value per channel (C, 1, 1)"


class PReluToDwconv(NodeLowering):
    name = "prelu-to-dwconv"
    summary = "PReLU -> its slope as a 1x1 depthwise conv (Max(x, a*x), or Relu(x) + a*Min(x, 0))"
    site_kind = "prelu"

    def plan(self, site: Site) -> tuple[np.ndarray | None, str | None]:
        return per_channel_slope(site)

    def replacement(self, node: gs.Node, slope: np.ndarray) -> tuple[list[gs.Node], str]:
        x, y = node.inputs[0], node.outputs[0]
        channels = slope.size
        weight = gs.Constant(f"{node.name}_slope_dw", slope.reshape(channels, 1, 1, 1))
        dtype = x.dtype or np.float32

        def tensor(suffix: str) -> gs.Variable:
            return gs.Variable(f"{node.name}_{suffix}", dtype=dtype, shape=x.shape)

        def conv(source: gs.Variable, out: gs.Variable) -> gs.Node:
            return gs.Node("Conv", f"{node.name}_slope", {"group": channels, "kernel_shape": [1, 1]},
                           [source, weight], [out])

        if float(slope.max()) <= 1.0:
            scaled = tensor("scaled")
            nodes = [conv(x, scaled), gs.Node("Max", f"{node.name}_max", {}, [x, scaled], [y])]
            form = "Max(x, a*x)"
        else:
            negative, scaled, positive = tensor("negative"), tensor("scaled"), tensor("positive")
            zero = gs.Constant(f"{node.name}_zero", np.zeros((), np.float32))
            nodes = [gs.Node("Min", f"{node.name}_min", {}, [x, zero], [negative]), conv(negative, scaled),
                     gs.Node("Relu", f"{node.name}_relu", {}, [x], [positive]),
                     gs.Node("Add", f"{node.name}_add", {}, [positive, scaled], [y])]
            form = "Relu(x) + a*Min(x, 0)"
        return nodes, f"{channels} ch: {form}, slopes {float(slope.min()):.3g}..{float(slope.max()):.3g}"
