"""What an isolated kernel session pays that the kernel does not pay inside a model.

Timed alone, a kernel's session also pays (a) the fixed cost of one session
run and (b) at ``ORT_ENABLE_ALL`` the layout conversions at its graph
boundary: onnxruntime runs convs, pools and friends in the blocked NCHWc
layout and converts the NCHW graph inputs in (``ReorderInput``) and the
outputs back (``ReorderOutput``). Inside a model the blocked tensors flow
from kernel to kernel and both are paid once per model, so summing raw
isolated timings overstated MobileNetV2 by ~50%.

``boundary_model`` rebuilds exactly those boundary conversions (read from the
optimized kernel graph onnxruntime writes) as a model of their own; timing
it with the same protocol and subtracting gives the kernel's net latency.
Conversions *inside* the kernel (a conv whose fused activation has no NCHWc
kernel) are real and stay.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

NCHWC = "com.microsoft.nchwc"


@lru_cache(maxsize=1)
def nchwc_block() -> int:
    """Channels per NCHWc block on this CPU (8 with AVX2, 16 with AVX-512), probed once."""
    node = helper.make_node("ReorderInput", ["x"], ["y"], domain=NCHWC, channels_last=0)
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(NCHWC, 1)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(session.run(None, {"x": np.zeros((1, 4, 1, 1), np.float32)})[0].shape[1])


def _shape(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def boundary_model(optimized: onnx.ModelProto, output_shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """The graph-boundary reorders of ``optimized`` (an ORT-optimized kernel graph) alone.

    ``output_shapes`` gives each graph output's NCHW shape (optimized graphs may not declare it).
    With no boundary reorders the model is a one-element Neg: the fixed cost of a session run.
    """
    graph_inputs = {v.name: v for v in optimized.graph.input}
    graph_outputs = {v.name for v in optimized.graph.output}
    nodes, inputs, outputs = [], [], []
    for index, node in enumerate(optimized.graph.node):
        if node.domain != NCHWC:
            continue
        if node.op_type == "ReorderInput" and node.input[0] in graph_inputs:
            name = f"in{index}"
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, _shape(graph_inputs[node.input[0]])))
            nodes.append(helper.make_node("ReorderInput", [name], [name + "_b"], domain=NCHWC, channels_last=0))
            outputs.append(helper.make_tensor_value_info(name + "_b", TensorProto.FLOAT, None))
        elif node.op_type == "ReorderOutput" and node.output[0] in graph_outputs:
            n, c, h, w = output_shapes[node.output[0]]
            padded = math.ceil(c / nchwc_block()) * nchwc_block()
            name = f"out{index}"
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, padded, h, w]))
            nodes.append(helper.make_node("ReorderOutput", [name], [name + "_y"], domain=NCHWC, channels=c,
                                          channels_last=0))
            outputs.append(helper.make_tensor_value_info(name + "_y", TensorProto.FLOAT, None))
    if not nodes:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])]
        nodes = [helper.make_node("Neg", ["x"], ["y"])]
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "boundary", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(NCHWC, 1)])
    model.ir_version = 10
    return model
