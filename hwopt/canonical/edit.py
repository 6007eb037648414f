"""Small helpers for the canonicalisation passes, which edit an onnx GraphProto in place."""

from __future__ import annotations

from collections import Counter

import onnx

from hwopt.io.held_weights import tensor_array


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Tensor name -> dims (None where symbolic), from graph inputs and inferred value_info."""
    shapes = {}
    for value in list(model.graph.input) + list(model.graph.value_info):
        if value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None
                                  for d in value.type.tensor_type.shape.dim]
    return shapes


def scalar_constant(name: str, inits: dict[str, onnx.TensorProto]) -> float | None:
    """The value of a one-element initializer, else None."""
    tensor = inits.get(name)
    if tensor is None:
        return None
    value = tensor_array(tensor)
    return float(value.reshape(())) if value.size == 1 else None


def variable_and_scalar(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> tuple[str, float] | None:
    """(variable input, scalar constant) of a two-input node, else None."""
    if len(node.input) != 2:
        return None
    for var, const in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
        value = scalar_constant(const, inits)
        if value is not None and var not in inits:
            return var, value
    return None


def read_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node reads, subgraphs (If/Loop bodies) included."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                names |= read_names(sub)
    return names


def drop_unread_initializers(graph: onnx.GraphProto, among: set[str] | None = None) -> None:
    """Remove the initializers no node reads any more (only those named in ``among``, when given)."""
    read = read_names(graph) | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in read or (among is not None and t.name not in among)]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def splice_nodes(graph: onnx.GraphProto, replaced: dict[int, onnx.NodeProto], dropped: set[int]) -> None:
    """Put each ``replaced[id(node)]`` in its node's place, drop the nodes whose id is in ``dropped``, and
    the initializers nothing reads any more."""
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    drop_unread_initializers(graph)


class GraphIndex:
    """The lookups a pattern-matching pass needs: initializers by name, each tensor's producer, who reads what."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self._readers = Counter(name for node in graph.node for name in node.input)
        self._outputs = {o.name for o in graph.output}

    def private(self, tensor: str) -> bool:
        """Read by one node only and not a graph output: a pass may fold its producer into that node."""
        return self._readers[tensor] == 1 and tensor not in self._outputs
