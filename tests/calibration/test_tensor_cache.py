"""TensorCache: incremental segment runs give the tensors a whole-model onnxruntime run gives."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from hwopt.calibration.samples import OrtRunner, random_inputs
from hwopt.canonical.canonicalize import load_canonical
from hwopt.analysis.sites import Analysis
from hwopt.calibration.tensor_cache import TensorCache


def _collect(cache: TensorCache, names: list[str], keep: list[str] = ()) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for _, outputs in cache.batches(names, keep=keep):
        for name in names:
            parts[name].append(outputs[name])
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


def _scaled_conv(model: onnx.ModelProto, conv_name: str, factor: float) -> onnx.ModelProto:
    """A copy of ``model`` whose conv ``conv_name`` has its weights scaled (a rewrite of one layer)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    node = next(n for n in copy.graph.node if n.name == conv_name)
    tensor = next(t for t in copy.graph.initializer if t.name == node.input[1])
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(factor), tensor.name))
    return copy


def test_segments_match_whole_model_runs_and_follow_rewrites(example_path) -> None:
    _, model, _ = load_canonical(example_path("mobilenetv2"))
    samples = random_inputs(model, 6, seed=0)
    blocks = Analysis(model).blocks
    cache = TensorCache(model, samples, batch=4)  # 4 + 2: a short last batch
    # Block by block, keeping each block's input: every run starts at the previous block.
    for block in blocks[1:5]:
        names = [block.input.name, block.depthwise.outputs[0].name, block.output.name]
        got = _collect(cache, names, keep=[block.input.name])
        want = OrtRunner(model, names, only_extra=True).run_all(samples)
        for name in names:
            _close(got[name], want[name])
        assert block.input.name in cache.values
    # The last run covered one block and a half, not the model from its input.
    assert 0 < cache.last_segment < len(model.graph.node) // 8
    # A rewrite of block 3's project conv: tensors after it are recomputed, those before it stay kept.
    changed = blocks[3].project
    rewritten = _scaled_conv(model, changed.name, 1.5)
    kept_before = blocks[2].input.name
    cache.set_model(rewritten, changed=[changed.outputs[0].name])
    assert kept_before in cache.values and blocks[4].input.name not in cache.values
    names = [blocks[6].output.name, kept_before]
    got = _collect(cache, names)
    want = OrtRunner(rewritten, names, only_extra=True).run_all(samples)
    for name in names:
        _close(got[name], want[name])


def test_a_budget_too_small_to_keep_anything_still_gives_the_tensors(example_path) -> None:
    _, model, _ = load_canonical(example_path("mobilenetv2"))
    samples = random_inputs(model, 3, seed=1)
    blocks = Analysis(model).blocks
    cache = TensorCache(model, samples, budget=1024)
    for block in blocks[1:3]:
        got = _collect(cache, [block.output.name], keep=[block.output.name])
        want = OrtRunner(model, [block.output.name], only_extra=True).run_all(samples)
        _close(got[block.output.name], want[block.output.name])
    assert not cache.values
