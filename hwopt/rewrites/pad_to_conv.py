"""pad-to-conv: zero channels added by a 1x1 conv instead of a Pad (exact).

A Pad that adds ``a`` zero channels before and ``b`` after the ``C`` of its NCHW input is the 1x1 conv whose
weights hold the identity in rows ``a..a+C-1`` and zeros elsewhere: every output is one input times 1, or
0, so nothing is rounded. Vela lowers a channel PAD to a memory copy that writes the zeros from a constant
(on Ethos-U55 read from flash per element: 47% of MediaPipe's face detector on ethos-u55-256), while a
conv's weights are read once per layer. Whether it pays depends on the configuration; the estimators do
not price the choice, so ``optimize`` judges it as a lowering (``hwopt.search.lowerings``) by whole-model
Vela. Only channel padding is rewritten: spatial pads stay Pads (a conv would shrink nothing there).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from hwopt.analysis.sites import Site
from hwopt.rewrites.node_lowering import NodeLowering


def channel_padding(site: Site) -> tuple[tuple[int, int] | None, str | None]:
    """((zero channels before, after), None) or (None, why this Pad is not a channel zero-pad of NCHW)."""
    pad = site.target
    mode = pad.node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        return None, f"its mode is {mode!r}, not constant"
    pads = pad.pads
    if pads is None:
        return None, "its pads are computed, not constants"
    if len(pad.node.inputs) > 3 and pad.node.inputs[3].name:
        return None, "it pads selected axes (the axes input)"
    if len(pads) != 8:
        return None, f"its input is {len(pads) // 2}-D (a 1x1 conv needs NCHW)"
    if any(pads[i] for i in (0, 2, 3, 4, 6, 7)):
        return None, "it pads other axes than the channels"
    if min(pads[1], pads[5]) < 0 or pads[1] + pads[5] == 0:
        return None, "it adds no channels (or crops them)"
    if pad.fill != 0.0:  # None (computed) too
        return None, "it pads with a value other than 0"
    if pad.channels is None:
        return None, "its input's channel count is unknown"
    return (pads[1], pads[5]), None


class PadToConv(NodeLowering):
    name = "pad-to-conv"
    summary = "zero-padding of channels -> a 1x1 conv with identity weights and zero rows"
    site_kind = "pad"

    def plan(self, site: Site) -> tuple[tuple[int, int, int] | None, str | None]:
        padding, why = channel_padding(site)
        return (None, why) if padding is None else ((*padding, site.target.channels), None)

    def replacement(self, node: gs.Node, plan: tuple[int, int, int]) -> tuple[list[gs.Node], str]:
        before, after, channels = plan
        weight = np.zeros((before + channels + after, channels, 1, 1), np.float32)
        weight[before + np.arange(channels), np.arange(channels)] = 1.0
        conv = gs.Node("Conv", f"{node.name}_conv", {"kernel_shape": [1, 1]},
                       [node.inputs[0], gs.Constant(f"{node.name}_identity", weight)], list(node.outputs))
        return [conv], f"{channels} -> {channels + before + after} ch ({before} zero channel(s) before, {after} after)"
