"""An ONNX graph as a trainable PyTorch module, parameters keyed by ONNX initializer name.

The module interprets the graph node by node with the functions of ``ops.py``
(autograd does the gradients). The weights and biases of Conv, Gemm and
MatMul nodes become ``nn.Parameter``s; every other initializer is a fixed
buffer. ``run`` evaluates any tensors of the graph from any fed tensors, so
one rewritten block can be trained alone on the tensor at its input.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from hwopt.errors import HwoptError
from hwopt.recover.ops import OPS

# Inputs of these ops that are trained when they are initializers (weight, bias).
TRAINABLE_INPUTS = {"Conv": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1)}


def trainable_initializers(model: onnx.ModelProto) -> list[str]:
    """Names of the float initializers that are a Conv/Gemm/MatMul weight or bias, in graph order."""
    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    names: dict[str, None] = {}
    for node in model.graph.node:
        for index in TRAINABLE_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] in floats:
                names[node.input[index]] = None
    return list(names)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC memory for image tensors: PyTorch's CPU convs (oneDNN) run several times faster on it, a
    5x5 depthwise conv's backward 40x (0.5 s instead of 21 s for 32x144x56x56 on 2 cores)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class OnnxModule(torch.nn.Module):
    """Runs ``model``'s graph; ``params`` holds the trainable initializers (``parameter(name)``)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
                raise HwoptError(f"recovery cannot train through {node.op_type} (node {node.name or node.output[0]}): "
                                 f"supported ops are {', '.join(sorted(OPS))}")
        trainable = set(trainable_initializers(model))
        # ParameterDict keys cannot hold dots: parameters are p0, p1, ... with a map from ONNX names.
        self.params = torch.nn.ParameterDict()
        self.keys: dict[str, str] = {}
        self.constants: dict[str, torch.Tensor] = {}
        for tensor in graph.initializer:
            array = numpy_helper.to_array(tensor)
            if tensor.name in trainable:
                key = f"p{len(self.keys)}"
                self.keys[tensor.name] = key
                self.params[key] = torch.nn.Parameter(_channels_last(torch.from_numpy(np.array(array, dtype=np.float32))))
            else:
                self.constants[tensor.name] = torch.from_numpy(np.array(array))
        self.nodes = [(node.op_type, {a.name: helper.get_attribute_value(a) for a in node.attribute},
                       list(node.input), list(node.output)) for node in graph.node]
        self.input_names = [v.name for v in graph.input if v.name not in self.constants and v.name not in self.keys]
        self.output_names = [v.name for v in graph.output]
        self._plans: dict[tuple, list[int]] = {}

    def parameter(self, onnx_name: str) -> torch.nn.Parameter:
        return self.params[self.keys[onnx_name]]

    def named_onnx_parameters(self) -> Iterable[tuple[str, torch.nn.Parameter]]:
        return ((name, self.params[key]) for name, key in self.keys.items())

    def to(self, *args, **kwargs):  # constants are plain tensors: move them along
        super().to(*args, **kwargs)
        self.constants = {k: v.to(*args, **kwargs) if v.is_floating_point() else v.to(args[0] if args else
                          kwargs.get("device")) for k, v in self.constants.items()}
        return self

    def _plan(self, fed: tuple[str, ...], wanted: tuple[str, ...]) -> list[int]:
        """Indices of the nodes that compute ``wanted`` from ``fed`` and the initializers."""
        key = (fed, wanted)
        if key not in self._plans:
            needed = set(wanted) - set(fed)
            chosen = []
            for index in reversed(range(len(self.nodes))):
                _, _, inputs, outputs = self.nodes[index]
                if needed.intersection(outputs):
                    chosen.append(index)
                    needed.update(i for i in inputs if i and i not in fed)
            missing = needed - {o for i in chosen for o in self.nodes[i][3]} - set(self.constants) - set(self.keys)
            if missing:
                raise HwoptError(f"tensor {sorted(missing)[0]!r} cannot be computed from {', '.join(fed)}")
            self._plans[key] = sorted(chosen)
        return self._plans[key]

    def run(self, feeds: dict[str, torch.Tensor], wanted: list[str], detach: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        """The ``wanted`` tensors computed from ``feeds``; tensors named in ``detach`` stop gradients."""
        stop, keep = set(detach), set(wanted)
        feeds = {k: _channels_last(v) for k, v in feeds.items()}
        # A detached tensor feeds the nodes after it; a wanted one is returned as computed (with its graph).
        kept = {k: v for k, v in feeds.items() if k in keep}
        values: dict[str, torch.Tensor] = {k: (v.detach() if k in stop else v) for k, v in feeds.items()}
        for index in self._plan(tuple(sorted(feeds)), tuple(wanted)):
            op_type, attrs, inputs, outputs = self.nodes[index]
            args = [self._value(name, values) if name else None for name in inputs]
            result = OPS[op_type](attrs, args)
            result = [result] if isinstance(result, torch.Tensor) else list(result)
            for name, value in zip(outputs, result):
                values[name] = value.detach() if name in stop else value
                if name in keep:
                    kept[name] = value
        return {name: kept.get(name, values.get(name)) for name in wanted}

    def _value(self, name: str, values: dict[str, torch.Tensor]) -> torch.Tensor:
        if name in values:
            return values[name]
        if name in self.keys:
            return self.params[self.keys[name]]
        return self.constants[name]

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.run(dict(zip(self.input_names, inputs)), self.output_names)
        return [outputs[name] for name in self.output_names]
