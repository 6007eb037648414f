"""The --input-shape hint for a model with open dims: from what the model says, or the user's to give."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from hwopt.canonical.canonicalize import check_input_dims
from hwopt.errors import HwoptError
from hwopt.io.shape_hint import unknown_dims_message


def _model(*inputs: tuple[str, list], metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in inputs]
    nodes = [helper.make_node("Relu", [name], [f"{name}_out"]) for name, _ in inputs]
    outs = [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None) for name, _ in inputs]
    model = helper.make_model(helper.make_graph(nodes, "g", values, outs),
                              opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model


def _message(model: onnx.ModelProto) -> str:
    with pytest.raises(HwoptError) as raised:
        check_input_dims(model)
    return str(raised.value)


def test_no_size_said_is_the_users_to_give_counted_from_one():
    """A Paddle text classifier (?x3x?x?): no made-up 224x224, the open dims named as a user counts them."""
    text = _message(_model(("x", [-1, 3, "?", "?"])))
    assert "224" not in text and "height and width" in text and "dims 3 and 4 of 4, counted from 1" in text
    assert "--input-shape x=1x3xHxW" in text


def test_named_dims_are_said_by_name():
    text = _message(_model(("x", ["N", 3, "rows", 64])))
    assert "'rows'" in text and "dim 3 of 4" in text and "x=1x3xrowsx64" in text and "224" not in text


def test_metadata_size_is_suggested():
    text = _message(_model(("x", [-1, 3, "?", "?"]), metadata={"image_shape": "3,48,192"}))
    assert "--input-shape x=1x3x48x192" in text and "image_shape" in text
    # A metadata size that contradicts a fixed dim is no hint.
    text = _message(_model(("x", [-1, 3, "?", "?"]), metadata={"input_size": "1,48,192"}))
    assert "48" not in text


def test_another_input_of_the_same_rank_is_suggested():
    text = _message(_model(("x", ["N", 3, "H", "W"]), ("ref", [1, 3, 96, 128])))
    assert "--input-shape x=1x3x96x128" in text and "'ref'" in text


def test_fixed_shapes_need_no_hint():
    model = _model(("x", ["N", 3, 32, 32]))
    check_input_dims(model)
    assert unknown_dims_message(model.graph.input[0], model) is None
