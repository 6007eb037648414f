"""Per-channel affine sites: each Mul or Add of an activation by a constant, where a rule may rewrite how
the constant is applied.

A Mul or Add by one value per channel that canonicalisation could not fold into a conv (it follows a pool,
an Add, the input; a BatchNormalization exported unfused) is an elementwise op whose second operand is a
constant broadcast over the map. Vela lowers it so, and on Ethos-U55 (Shared_Sram: constants in flash)
that costs cycles per element: the two of them 77 of 129 ms of an age-and-gender net on ethos-u55-256
(``bench/vela_lowerings.py``). ``affine-to-dwconv`` writes the same product or sum as a 1x1 depthwise conv.
A BatchNormalization op left standalone (after a ReLU: a captcha CNN through tf2onnx) is both at once:
hwopt's TFLite writer lowers it to a MUL and an ADD by per-channel constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from hwopt.analysis.graph import Node, Tensor, constant_value

AFFINE_OPS = ("Mul", "Add")
BATCH_NORM = "BatchNormalization"


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
        """The Mul's or Add's constant; a BatchNormalization's scale (``affine`` gives its shift too)."""
        if self.node.op == BATCH_NORM:
            return self.affine()[0]
        return next(value for value in map(constant_value, self.node.inputs) if value is not None)

    def affine(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(scale, shift) the node applies: a Mul's (c, None), an Add's (None, d), a BatchNormalization's both
        (inference mode: x * gamma / sqrt(var + eps) + beta - mean * that)."""
        if self.node.op == BATCH_NORM:
            from hwopt.canonical.canonicalize import batch_norm_affine

            gamma, beta, mean, var = (constant_value(t) for t in self.node.inputs[1:5])
            scale, shift = batch_norm_affine(gamma, beta, mean, var, float(self.node.attrs.get("epsilon", 1e-5)))
            return scale, shift
        value = self.constant
        return (value, None) if self.node.op == "Mul" else (None, value)

    @property
    def channels(self) -> int | None:
        shape = self.operand.shape
        return int(shape[1]) if shape is not None and len(shape) >= 2 and isinstance(shape[1], int) else None

    def describe(self) -> str:
        return f"{self.node.op} by a constant of shape {list(self.constant.shape)}"


def find_affine(graph: gs.Graph) -> list[AffineSite]:
    """Every Mul or Add of exactly one activation and one constant, and every BatchNormalization (inference
    mode: one output) of constant statistics."""
    nodes = [n for n in graph.nodes if (n.op in AFFINE_OPS and len(n.inputs) == 2
                                        and sum(constant_value(t) is None for t in n.inputs) == 1)
             or (n.op == BATCH_NORM and len(n.inputs) == 5 and len(n.outputs) == 1
                 and constant_value(n.inputs[0]) is None
                 and all(constant_value(t) is not None for t in n.inputs[1:5]))]
    return [AffineSite(id=f"aff{i}", node=node) for i, node in enumerate(nodes)]
