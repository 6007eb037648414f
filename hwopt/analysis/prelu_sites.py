"""PReLU sites: each PRelu node, where a rule may rewrite how its per-channel slope is applied.

A PRelu multiplies the negative part of its input by a learned slope per channel. Some accelerators
apply that slope as an elementwise product with a constant broadcast over the whole map (Vela on Ethos-U
reads it per element from where constants live: flash on U55), which costs far more than the
activation's arithmetic; ``prelu-to-dwconv`` moves the slope into a 1x1 depthwise conv's weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from hwopt.analysis.graph import Node, constant_value, input_channels


@dataclass
class PReluSite:
    id: str
    node: Node

    @property
    def slope(self) -> np.ndarray | None:
        """The slope as a constant, or None when it is computed."""
        return constant_value(self.node.inputs[1])

    @property
    def channels(self) -> int | None:
        return input_channels(self.node)

    def describe(self) -> str:
        slope = self.slope
        if slope is None:
            return "slope computed"
        return f"{self.channels} ch, slopes {float(slope.min()):.3g}..{float(slope.max()):.3g}"


def find_prelu(graph: gs.Graph) -> list[PReluSite]:
    return [PReluSite(id=f"pr{i}", node=node)
            for i, node in enumerate(n for n in graph.nodes if n.op == "PRelu")]
