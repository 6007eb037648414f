"""Finding inverted-bottleneck (IBN) blocks and depthwise convs in a graph.

An IBN block is: [1x1 expand conv -> act] -> KxK depthwise conv (any stride)
-> act -> [squeeze-excite] -> 1x1 project conv [-> residual Add]. A block
without the expand conv (MobileNetV2's first) is found and reported too; it
has nothing to fuse. Blocks and depthwise convs are numbered in topological
order, which is stable for a given graph: ``ibn0``, ``ibn1``, ..., ``dw0``, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from hwopt.analysis.activations import Activation, match_activation_chain
from hwopt.analysis.graph import ConvAttrs, Node, Tensor, conv_attrs, rewritable_conv


@dataclass
class SqueezeExcite:
    """GAP -> conv -> act -> conv -> gate, multiplied back onto the block's hidden tensor."""

    nodes: list[Node]
    mul: Node
    reduce_conv: Node
    expand_conv: Node


@dataclass
class IBNBlock:
    id: str
    index: int
    input: Tensor  # the block input (the expand conv's input, or the depthwise conv's)
    expand: Node | None
    expand_acts: list[Activation]
    depthwise: Node
    depthwise_acts: list[Activation]
    se: SqueezeExcite | None
    project: Node
    residual: Node | None
    output: Tensor
    notes: list[str] = field(default_factory=list)

    @property
    def dw_attrs(self) -> ConvAttrs:
        attrs = conv_attrs(self.depthwise)
        assert attrs is not None
        return attrs

    @property
    def hidden_channels(self) -> int:
        return self.dw_attrs.in_channels

    @property
    def in_channels(self) -> int:
        if self.expand is not None:
            return conv_attrs(self.expand).in_channels  # type: ignore[union-attr]
        return self.dw_attrs.in_channels

    @property
    def out_channels(self) -> int:
        return conv_attrs(self.project).out_channels  # type: ignore[union-attr]

    @property
    def expand_ratio(self) -> float:
        return self.hidden_channels / self.in_channels

    @property
    def fusable(self) -> bool:
        return self.expand is not None

    def describe(self) -> str:
        a = self.dw_attrs
        parts = [
            f"{self.in_channels}->{self.hidden_channels}->{self.out_channels}",
            f"k{a.kernel[0]} s{a.strides[0]}",
        ]
        if self.se is not None:
            parts.append("SE")
        if self.residual is not None:
            parts.append("residual")
        if self.expand is None:
            parts.append("no expand" + (f" ({'; '.join(self.notes)})" if self.notes else ""))
        return ", ".join(parts)


@dataclass
class DepthwiseConv:
    id: str
    index: int
    node: Node
    block: str | None  # id of the IBN block it belongs to, if any

    @property
    def attrs(self) -> ConvAttrs:
        attrs = conv_attrs(self.node)
        assert attrs is not None
        return attrs

    def describe(self) -> str:
        a = self.attrs
        return f"{a.in_channels} ch, k{a.kernel[0]} s{a.strides[0]}" + (f" d{a.dilations[0]}" if a.dilations[0] > 1 else "")


def find_depthwise(graph: gs.Graph) -> list[DepthwiseConv]:
    found = []
    for node in graph.nodes:
        attrs = rewritable_conv(node)
        if attrs is not None and attrs.is_depthwise:
            found.append(DepthwiseConv(id=f"dw{len(found)}", index=len(found), node=node, block=None))
    return found


def find_ibn_blocks(graph: gs.Graph, depthwise: list[DepthwiseConv] | None = None) -> list[IBNBlock]:
    """All IBN blocks, in topological order of their depthwise conv."""
    depthwise = depthwise if depthwise is not None else find_depthwise(graph)
    blocks: list[IBNBlock] = []
    claimed: dict[str, str] = {}  # conv name -> id of the fusable block whose project it is
    for dw in depthwise:
        block = _match_block(dw.node, len(blocks))
        if block is not None:
            # A conv belongs to at most one fusable block. In a stack of depthwise-separable
            # layers (PP-LCNet, MobileNetV1) each pointwise conv is the project of one block and
            # the expand of the next; fusing both would fuse away the first block's output.
            # Blocks claim their convs in topological order; a later block whose expand is
            # taken is reported without one.
            if block.expand is not None and block.expand.name in claimed:
                block.notes.append(f"its expand conv is the project of {claimed[block.expand.name]}")
                block.input = block.depthwise.inputs[0]
                block.expand, block.expand_acts = None, []
                if block.residual is not None and block.input not in block.residual.inputs:
                    block.residual, block.output = None, block.project.outputs[0]
            if block.expand is not None:
                claimed[block.project.name] = block.id
            dw.block = block.id
            blocks.append(block)
    return blocks


def _match_block(dw: Node, index: int) -> IBNBlock | None:
    expand, expand_acts, block_input = _match_expand(dw)
    dw_out, dw_acts = match_activation_chain(dw.outputs[0])
    se, hidden = _match_se(dw_out)
    if len(hidden.outputs) != 1:
        return None
    project = hidden.outputs[0]
    project_attrs = rewritable_conv(project)
    if project_attrs is None or not project_attrs.is_pointwise or project.inputs[0] is not hidden:
        return None
    output = project.outputs[0]
    residual = _match_residual(output, block_input)
    if residual is not None:
        output = residual.outputs[0]
    return IBNBlock(
        id=f"ibn{index}",
        index=index,
        input=block_input,
        expand=expand,
        expand_acts=expand_acts,
        depthwise=dw,
        depthwise_acts=dw_acts,
        se=se,
        project=project,
        residual=residual,
        output=output,
    )


def _match_expand(dw: Node) -> tuple[Node | None, list[Activation], Tensor]:
    """Walk back from the depthwise conv over an activation chain to a 1x1 expand conv."""
    dw_in = dw.inputs[0]
    current = dw_in
    # Walk back over the activation's nodes (at most a handful) to the nearest Conv, then
    # confirm that the activation chain from that conv ends exactly at the depthwise input.
    for _ in range(8):
        node = current.inputs[0] if current.inputs else None
        if node is None:
            break
        attrs = rewritable_conv(node)
        if attrs is not None:
            if attrs.is_pointwise:
                # No activation at all (a linear expand) is a block too: its fusion is exact.
                end, acts = match_activation_chain(node.outputs[0])
                if end is dw_in and len(dw_in.outputs) == 1:
                    return node, acts, node.inputs[0]
            break
        variables = [t for t in node.inputs if isinstance(t, gs.Variable)]
        if not variables:
            break
        current = variables[0]
    return None, [], dw_in


def _match_se(x: Tensor) -> tuple[SqueezeExcite | None, Tensor]:
    """x -> [GAP -> conv -> act -> conv -> gate] -> Mul(x, gate); returns (se, tensor after it)."""
    users = list(x.outputs)
    if len(users) != 2:
        return None, x
    pools = [u for u in users if u.op in ("GlobalAveragePool", "ReduceMean")]
    muls = [u for u in users if u.op == "Mul"]
    if len(pools) != 1 or len(muls) != 1:
        return None, x
    pool, mul = pools[0], muls[0]
    nodes = [pool]
    current = pool.outputs[0]
    convs: list[Node] = []
    while current is not None and mul not in current.outputs:
        users = list(current.outputs)
        if len(users) == 1 and users[0].op == "Conv":
            convs.append(users[0])
            nodes.append(users[0])
            current = users[0].outputs[0]
            continue
        # An activation may use its input twice: SiLU inside EfficientNet's SE is x * Sigmoid(x).
        end, acts = match_activation_chain(current)
        if not acts:
            return None, x
        for act in acts:
            nodes.extend(act.nodes)
        current = end
    if len(convs) != 2 or current is None or mul not in current.outputs:
        return None, x
    nodes.append(mul)
    return SqueezeExcite(nodes=nodes, mul=mul, reduce_conv=convs[0], expand_conv=convs[1]), mul.outputs[0]


def _match_residual(project_out: Tensor, block_input: Tensor) -> Node | None:
    if len(project_out.outputs) != 1:
        return None
    node = project_out.outputs[0]
    if node.op == "Add" and len(node.inputs) == 2 and block_input in node.inputs:
        return node
    return None
