"""Per-channel affine sites: each Mul or Add of an activation by a constant, where a rule may rewrite how
the constant is applied.

A Mul or Add by one value per channel that canonicalisation could not fold into a conv (it follows a pool,
an Add, the input; a BatchNormalization exported unfused) is an elementwise op whose second operand is a
constant broadcast over the map. Vela lowers it so, and on Ethos-U55 (Shared_Sram: constants in flash)
that costs cycles per element: the two of them 77 of 129 ms of an age-and-gender net on ethos-u55-256
(``bench/vela_lowerings.py``). ``affine-to-dwconv`` writes the same product or sum as a 1x1 depthwise conv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from hwopt.analysis.graph import Node, Tensor, constant_value

AFFINE_OPS = ("Mul", "Add")


@dataclass
class AffineSite:
    id: str
    node: Node

    @property
    def operand(self) -> Tensor:
        """The activation the constant is applied to."""
        return next(t for t in self.node.inputs if constant_value(t) is None)

    @property
    def constant(self) -> np.ndarray:
        return next(value for value in map(constant_value, self.node.inputs) if value is not None)

    @property
    def channels(self) -> int | None:
        shape = self.operand.shape
        return int(shape[1]) if shape is not None and len(shape) >= 2 and isinstance(shape[1], int) else None

    def describe(self) -> str:
        return f"{self.node.op} by a constant of shape {list(self.constant.shape)}"


def find_affine(graph: gs.Graph) -> list[AffineSite]:
    """Every Mul or Add of exactly one activation and one constant."""
    nodes = [n for n in graph.nodes if n.op in AFFINE_OPS and len(n.inputs) == 2
             and sum(constant_value(t) is None for t in n.inputs) == 1]
    return [AffineSite(id=f"aff{i}", node=node) for i, node in enumerate(nodes)]
