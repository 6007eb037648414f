"""A tiny model with one of every site kind (an IBN block with a residual, its depthwise conv, channel
groups), small enough that every rule applies in well under a second (fuse-ibn's joint refit: ~2 s).

Used where a test runs the CLI many times (the fuzz suite, the reliability checks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_model(channels: int = 8, size: int = 8, seed: int = 0, batch: int | str = 1) -> onnx.ModelProto:
    """x[batch, C, size, size] -> expand 1x1 (2C) -> Relu -> depthwise 3x3 -> Relu -> project 1x1 (C) + x
    -> head 1x1 (12 channels) -> y."""
    rng = np.random.default_rng(seed)
    c = channels

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    initializers = [weight("w1", (2 * c, c, 1, 1)), weight("b1", (2 * c,)), weight("w2", (2 * c, 1, 3, 3)),
                    weight("b2", (2 * c,)), weight("w3", (c, 2 * c, 1, 1)), weight("b3", (c,)),
                    weight("w4", (12, c, 1, 1)), weight("b4", (12,))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["e"], name="expand"),
        helper.make_node("Relu", ["e"], ["er"], name="relu1"),
        helper.make_node("Conv", ["er", "w2", "b2"], ["d"], name="dw", group=2 * c, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["dr"], name="relu2"),
        helper.make_node("Conv", ["dr", "w3", "b3"], ["p"], name="project"),
        helper.make_node("Add", ["p", "x"], ["s"], name="add"),
        helper.make_node("Conv", ["s", "w4", "b4"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 12, size, size])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hwopt-tests")
    model.ir_version = 8
    return model


def write_tiny(path: Path, *, external: bool = False, **kwargs) -> Path:
    """The tiny model on disk; ``external``: weights in ``<name>.data`` next to it."""
    model = tiny_model(**kwargs)
    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, path)
    return path
