"""Channel-pad sites: each Pad node, where a rule may rewrite how zero channels are added.

MediaPipe's BlazeBlocks widen a residual shortcut with a Pad on the channel axis. Vela lowers a TFLite
PAD to a memory copy that writes the zeros from a constant, which on Ethos-U55 (Shared_Sram: constants in
flash) is read per element: 47% of MediaPipe's face detector on ethos-u55-256. ``pad-to-conv`` writes the
same padding as a 1x1 conv whose weights are an identity block and zero rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from hwopt.analysis.graph import Node, constant_value, input_channels


@dataclass
class PadSite:
    id: str
    node: Node

    @property
    def pads(self) -> list[int] | None:
        """The pads (begin..., end...), or None when they are computed."""
        if "pads" in self.node.attrs:  # opset < 11
            return [int(p) for p in self.node.attrs["pads"]]
        if len(self.node.inputs) < 2:
            return None
        value = constant_value(self.node.inputs[1])
        return None if value is None else [int(p) for p in np.asarray(value).reshape(-1)]

    @property
    def fill(self) -> float | None:
        """The constant the padding writes, or None when it is computed."""
        if "value" in self.node.attrs:  # opset < 11
            return float(self.node.attrs["value"])
        if len(self.node.inputs) < 3 or not self.node.inputs[2].name:
            return 0.0
        value = constant_value(self.node.inputs[2])
        return None if value is None or np.asarray(value).size != 1 else float(np.asarray(value).reshape(-1)[0])

    @property
    def channels(self) -> int | None:
        return input_channels(self.node)

    def describe(self) -> str:
        pads = self.pads
        return "pads computed" if pads is None else f"pads {pads}"


def find_pads(graph: gs.Graph) -> list[PadSite]:
    return [PadSite(id=f"pad{i}", node=node) for i, node in enumerate(n for n in graph.nodes if n.op == "Pad")]
