"""Elementwise chaining: which elementwise ops an NPU compiler runs inside the kernel before them (``[fusion] chain_elementwise``).

Vela 5.2 on Ethos-U85 packs an elementwise op into the group of the op it executes just before it
(regor: ``Graph::TraverseGraphFromEnd`` gives the order, ``SchedulerPacking::CanPack`` and
``EthosU85OpGroup::Chain`` the conditions). A chained op has no cycles of its own in the per-layer
report: its work goes into the conv's row and the write and read of the tensor between them go away.
The rule, checked against Vela on 341 Adds of 22 real exports and 31 made-up models, all agreeing, and
then for Mul, Sub, Max and Min and ops by a constant (an unfolded BatchNormalization's Mul and Add by
[1, C, 1, 1], which Vela chains onto the conv before them: ``EthosU85OpGroup::Chain`` lets the other
operand broadcast when the chained one has the op's full shape):

- **Order.** Vela runs the graph in post-order from its outputs; an op's last input's producer runs
  first and its first input's producer right before it (unless already run inside the other branch).
- **The op just before.** Only the kernel run just before the Add can take it, through its output
  tensor, which must be one of the Add's inputs, read by nothing else and not a graph output.
- **Who can start a chain.** A conv, gemm, pooling or elementwise kernel (by a constant too); not a Pad (a memory copy), a
  Resize, a Concat, a strided ConvTranspose (written as slices), a standalone activation such as a PReLU
  (its passes already take the chain's inputs), nor a view.
- **Limits.** At most 4 ops and 3 outside inputs (every input but a scalar constant) in a chain; no
  broadcast of an activation operand (a constant operand may broadcast); an op of fewer than 8 channels
  after a conv is reshaped deeper first, which the packing refuses.

The schedule fuses a chained op into that kernel: its ``act`` gains the op (``add``, ``mul``,
``mul(per channel)``..., then the op's own activation), so the kernel's in-context row carries the op's
work, and no kernel of the op is left to price.
Swapping the inputs of an ``Add(Pad(x), conv(...))`` would let Vela chain it; that is a rewrite, not
something the schedule assumes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx_graphsurgeon as gs

from hwopt.analysis.graph import Node, constant_value
from hwopt.analysis.kernel import CONV_KINDS, Schedule, ScheduledKernel
from hwopt.analysis.kernels import BINARY_ELEMENTWISE

CHAINED_OPS = ("Add", "Sub", "Mul", "Max", "Min")  # Vela's native binary elementwise ops (Div is lowered)
# Ops the writer lowers to several chainable ones: a standalone BatchNormalization is a MUL and an ADD by
# per-channel constants (hwopt.tflite.ops_elementwise.batch_norm), which Vela chains one after the other
# (the captcha CNN of set F on ethos-u85-256). (ops in the chain, outside inputs).
LOWERED_CHAINS = {"BatchNormalization": (2, 2)}
_CHAINABLE = frozenset(CHAINED_OPS) | frozenset(LOWERED_CHAINS)

MAX_CHAIN_OPS = 4
MAX_OUTSIDE_INPUTS = 3
MIN_DEPTH_AFTER_CONV = 8
_STARTERS = CONV_KINDS + ("gemm", "pool", "eltwise")


@dataclass
class _Group:
    ops: int
    outside: int


def vela_order(graph: gs.Graph) -> list[Node]:
    """Nodes in the order Vela runs them: post-order from the outputs, inputs pushed first to last (so the
    first input's producer completes last)."""
    order: list[Node] = []
    visited: set[int] = set()
    stack = [(False, t.inputs[0]) for t in graph.outputs if t.inputs]
    while stack:
        done, node = stack.pop()
        if done:
            order.append(node)
        elif id(node) not in visited:
            visited.add(id(node))
            stack.append((True, node))
            stack.extend((False, t.inputs[0]) for t in node.inputs if t.inputs and id(t.inputs[0]) not in visited)
    return order


def _outside(tensors: list) -> int:
    """Inputs that count against the chain's outside inputs: all but scalar constants."""
    return sum(1 for t in tensors if not ((value := constant_value(t)) is not None and value.size == 1))


def _starts_chain(sk: ScheduledKernel, first: Node) -> bool:
    if sk.kernel.kind == "act":  # an elementwise op by a constant (MobileFaceNet's PReLU as Min, Mul, Add)
        return first.op in _CHAINABLE
    if sk.kernel.kind not in _STARTERS:
        return False
    if first.op == "ConvTranspose" and max(int(s) for s in first.attrs.get("strides", (1, 1))) > 1:
        return False  # written as one conv per output phase, each into a slice: several producers
    return sk.kernel.kind != "eltwise" or first.op in BINARY_ELEMENTWISE


def chain_elementwise(result: Schedule, graph: gs.Graph) -> list[int]:
    """Fuse every elementwise op Vela chains into the kernel before it, in place; returns the indices of
    the kernels that were removed (to drop from lists kept beside ``result.kernels``)."""
    nodes = {node.name: node for node in graph.nodes}
    owner = {name: i for i, sk in enumerate(result.kernels) for name in sk.nodes}
    outputs = {t.name for t in graph.outputs}
    groups: dict[int, _Group] = {}
    removed: list[int] = []
    previous: int | None = None
    for node in vela_order(graph):
        index = owner.get(node.name)
        if index is None:
            continue
        sk = result.kernels[index]
        merged = None
        if (node.op in _CHAINABLE and sk.kernel.kind in ("eltwise", "act") and sk.nodes[0] == node.name
                and previous is not None and previous != index):
            merged = _chain_into(result, nodes, groups, previous, index, node, outputs)
        if merged is not None:
            removed.append(index)
            for name in sk.nodes:
                owner[name] = merged
            previous = merged
        elif previous != index or index not in groups:
            previous = index
            first = nodes[sk.nodes[0]]
            ops, outside = LOWERED_CHAINS.get(first.op, (1, _outside(first.inputs if sk.kernel.kind in ("eltwise", "act")
                                                                            else first.inputs[:1])))
            groups[index] = _Group(ops, outside)
    for index in sorted(removed, reverse=True):
        del result.kernels[index]
    return removed


def _chain_into(result: Schedule, nodes: dict[str, Node], groups: dict[int, _Group], before: int, index: int,
                add: Node, outputs: set[str]) -> int | None:
    """Fuse the elementwise kernel ``index`` (first node ``add``) into kernel ``before`` when Vela would chain
    it; the kernel it joined."""
    host, guest = result.kernels[before], result.kernels[index]
    written = host.output
    fed = [t for t in add.inputs if t.name == written]
    if not fed or len(fed[0].outputs) != 1 or written in outputs:
        return None
    if not _starts_chain(host, nodes[host.nodes[0]]):
        return None
    group = groups[before]
    others = [t for t in add.inputs if t.name != written]
    ops, outside = LOWERED_CHAINS.get(add.op, (1, _outside(others)))
    if group.ops + ops > MAX_CHAIN_OPS or group.outside + outside > MAX_OUTSIDE_INPUTS:
        return None
    shape = tuple(add.outputs[0].shape or ())
    if not shape or any(tuple(t.shape or ()) != shape for t in add.inputs if not isinstance(t, gs.Constant)):
        return None  # a broadcast operand
    depth = int(shape[1]) if len(shape) == 4 and isinstance(shape[1], (int, np.integer)) else None
    if host.kernel.kind in CONV_KINDS and depth is not None and depth < MIN_DEPTH_AFTER_CONV:
        return None
    op = (guest.kernel.op or add.op).lower()
    act = "+".join(part for part in (host.kernel.act, op, guest.kernel.act) if part)
    host.kernel = replace(host.kernel, act=act)
    host.nodes.extend(guest.nodes)
    host.output, host.output_bytes = guest.output, guest.output_bytes
    host.inputs.extend(t.name for t in others if t.name not in host.inputs and not isinstance(t, gs.Constant))
    group.ops += ops
    group.outside += outside
    return before
