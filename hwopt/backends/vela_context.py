"""Each kernel's cost inside its model, from one whole-model Vela compile (``hwopt profile --in-context``).

Vela schedules across layers (cascading, weight buffering, tensors kept in SRAM between layers), so a
kernel compiled alone does not cost what it costs in a model. Its ``--verbose-performance`` per-layer
report gives every layer's cycles **in context** (they sum to the model's total cycles exactly), and
each row maps back to ONNX nodes (``map_layers``: the writer names TFLite tensors after ONNX ones). This
module turns those rows into the model's schedule (``hwopt.analysis.kernels.schedule`` under the target's
fusion policy, the same one the estimator sums over), one figure per scheduled kernel:

- a layer whose ONNX nodes belong to one scheduled kernel is that kernel's; a layer spanning several
  (a writer fusion the schedule keeps apart) goes to the one with the most MACs;
- a convolution layer (Conv2D, DepthwiseConv2D, TransposeConv, FullyConnected) named after a tensor of a
  kernel that is no convolution is the convolution feeding that kernel: Vela writes a conv's output
  straight into a Concat's buffer or a Pad's padded tensor and names the layer after it (ResNet-18's stem
  conv appeared as ``/relu/Relu_output_0/pad``, the MaxPool's pad; a U-Net's 1x1 conv as the Concat);
- a layer with no ONNX node of the schedule (a tensor Vela or the writer added and named afresh) goes to
  the kernel of the layer before it (Vela lists layers in execution order), and is counted in
  ``unmapped_us``;
- a kernel with no NPU row of its own (Vela merged it, e.g. a Concat written in place or a Transpose the
  writer folded, or ran it on the CPU, which Vela's model time does not count) costs 0 in the model: it is
  marked ``no_row`` and its figure is 0. Views are free in the schedule and are left out.

So the figures of a model's kernels sum to Vela's whole-model latency (``attributed_us`` equals
``latency_us`` up to rounding), which ``tests/backends/test_vela_context.py`` checks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from hwopt.analysis.kernel import CONV_KINDS, Kernel
from hwopt.targets import Target


CONV_OPERATORS = frozenset(("Conv2D", "DepthwiseConv2D", "TransposeConv2D", "FullyConnected"))  # Vela 5.2 operator names
_WEIGHTED = frozenset(CONV_KINDS) | {"gemm"}


def _feeding_conv(index: int, sched, producer: dict[str, int], priced: set[int], macs: float = 0.0) -> int | None:
    """The convolution kernel feeding kernel ``index`` that a conv row named after ``index``'s output is: Vela
    lets one conv write straight into a Concat's output, its row then named after the Concat. Among the
    feeding convs with no row of their own (not in ``priced``), the one whose MAC count is nearest the row's,
    then the latest in the schedule (InceptionV3's four branches feed one Concat, two of them with the same
    MACs); None when every feeding conv has a row."""
    found = [producer[name] for name in sched.kernels[index].inputs if name in producer]
    found = [i for i in found if sched.kernels[i].kernel.kind in _WEIGHTED and i not in priced]
    if not found:
        return None

    def distance(i: int) -> float:
        own = float(sched.kernels[i].kernel.macs)
        return abs(math.log(own / macs)) if own > 0 and macs > 0 else 0.0

    return min(found, key=lambda i: (distance(i), -i))


@dataclass
class KernelInContext:
    kernel: Kernel
    nodes: list[str]
    latency_us: float  # Vela's cycles for this kernel's layers inside the model, in microseconds
    layers: list[str] = field(default_factory=list)  # Vela layer names (output tensors)
    no_row: bool = False  # no NPU layer of its own: merged by Vela or run on the CPU (cost 0 in the model)


@dataclass
class ModelInContext:
    name: str
    latency_us: float  # Vela's inference time of the whole model
    kernels: list[KernelInContext]
    unmapped_us: float = 0.0  # layers with no ONNX node of the schedule (given to the layer before)
    cpu_layers: int = 0

    @property
    def attributed_us(self) -> float:
        return sum(k.latency_us for k in self.kernels)


# Vela names some passes of a lowered op after the op's *input* tensor: a PReLU's MINIMUM pass carries the
# name of the Add or conv before it (MediaPipe's palm detector: 221,184 cycles a PReLU booked to each Add).
# Such a row belongs to the kernel that reads that tensor and holds an ONNX node of the row's operator.
# Vela 5.2 on U85 names a Softmax's passes after its input too ("<input>_softmax_N", MTCNN's O-Net: 27 rows
# booked to the Gemm before it).
# And a MaxPool whose output only a channel Pad reads is written straight into the padded tensor: its row
# is named after the Pad (MediaPipe's BlazeFace shortcuts; the corpus' blaze family), so it belongs to the
# kernel feeding the row's owner that holds the op.
_ROW_OPERATOR_NODES = {"Prelu": ("PRelu",), "Softmax": ("Softmax", "LogSoftmax"), "MaxPool": ("MaxPool",),
                       "AvgPool": ("AveragePool",)}


def _reader_with_operator(layer: dict, owners: set[int], sched, op_of: dict[str, str]) -> set[int]:
    """The kernels a row belongs to: its name's owners, or, when none of them holds a node of the row's
    operator (``_ROW_OPERATOR_NODES``), the kernel reading that tensor (or the owners' output) that does, else
    the kernel feeding the owners that does."""
    ops = _ROW_OPERATOR_NODES.get(layer["operator"])
    if not ops or not owners or any(op_of.get(n) in ops for i in owners for n in sched.kernels[i].nodes):
        return owners
    read = {layer["name"]} | {sched.kernels[i].output for i in owners}
    fed = {name for i in owners for name in sched.kernels[i].inputs}
    holds = [i for i, sk in enumerate(sched.kernels) if any(op_of.get(n) in ops for n in sk.nodes)]
    readers = {i for i in holds if read.intersection(sched.kernels[i].inputs)}
    feeders = {i for i in holds if sched.kernels[i].output in fed}
    return readers or feeders or owners


def model_in_context(model: str | Path | onnx.ModelProto, target: Target) -> ModelInContext:
    """Compile ``model`` whole with Vela for ``target`` and give each scheduled kernel its in-model cycles."""
    from hwopt.analysis.kernels import schedule
    from hwopt.backends.vela import measure_model
    from hwopt.canonical.canonicalize import canonicalize
    from hwopt.io.model import load_model

    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    measured = measure_model(proto, target)
    # The writer canonicalises the same way (verify=False), so node names agree with Vela's mapped rows.
    canonical, _ = canonicalize(proto, verify=False)
    sched = schedule(canonical, target.fusion)
    owner = {node: i for i, sk in enumerate(sched.kernels) for node in sk.nodes}
    op_of = {node.name: node.op_type for node in canonical.graph.node}
    producer = {sk.output: i for i, sk in enumerate(sched.kernels)}
    clock = float(measured.meta.get("clock_hz") or 0.0)
    us_per_cycle = 1e6 / clock if clock else 0.0
    cycles: dict[int, float] = defaultdict(float)
    names: dict[int, list[str]] = defaultdict(list)
    unmapped, previous = 0.0, None
    routed: dict[tuple[str, str], int] = {}
    layers = [layer for layer in measured.meta["layers"] if layer["target"] == "NPU"]
    cpu = len(measured.meta["layers"]) - len(layers)  # Vela's model time does not count CPU operators
    # kernels with a row of their own somewhere: a conv row named after a Concat is one of the others
    with_rows = {owner[n] for layer in layers for n in layer["onnx_nodes"] if n in owner}
    for position, layer in enumerate(layers):
        owners = {owner[n] for n in layer["onnx_nodes"] if n in owner}
        if not owners:
            # Vela splits some ops into passes, the first ones writing internal tensors named "#N" that map to
            # no ONNX node (a Transpose of the 16x256x256 output: two passes): such a pass is the next row's op
            for following in layers[position + 1:]:
                if following["operator"] != layer["operator"]:
                    break
                owners = {owner[n] for n in following["onnx_nodes"] if n in owner}
                if owners:
                    break
        owners = _reader_with_operator(layer, owners, sched, op_of)
        if (layer["name"], layer["operator"]) in routed:  # Vela's second row of one layer (its fused activation)
            index = routed[(layer["name"], layer["operator"])]
        elif owners:
            index = max(sorted(owners), key=lambda i: sched.kernels[i].kernel.macs)
            if layer["operator"] in CONV_OPERATORS and sched.kernels[index].kernel.kind not in _WEIGHTED:
                feeding = _feeding_conv(index, sched, producer, with_rows | set(cycles), float(layer.get("macs") or 0.0))
                index = feeding if feeding is not None else index
        else:
            unmapped += layer["cycles"]
            index = previous if previous is not None else next(
                (i for i, sk in enumerate(sched.kernels) if sk.kernel.kind != "view"), 0)
        routed[(layer["name"], layer["operator"])] = index
        cycles[index] += layer["cycles"]
        names[index].append(layer["name"])
        previous = index
    kernels = [KernelInContext(sk.kernel, list(sk.nodes), cycles.get(i, 0.0) * us_per_cycle, names.get(i, []),
                               no_row=i not in cycles)
               for i, sk in enumerate(sched.kernels) if sk.kernel.kind != "view" or i in cycles]
    label = proto.graph.name if isinstance(model, onnx.ModelProto) else Path(model).stem
    return ModelInContext(label, measured.latency_us, kernels, unmapped * us_per_cycle, cpu)
