"""A model's internal tensors on every calibration sample, computed incrementally.

Layer-wise refits (fuse-ibn, block after block in graph order) need, for each
block, tensors of the model as rewritten so far and of the original. Running
the whole prefix from the graph input for every block costs quadratic time in
depth. ``TensorCache`` keeps the tensors it was asked to keep (block
boundaries) for all samples and runs only the segment of the graph between
those and the tensors wanted next. When the model is rewritten, the caller
names the tensors whose values changed and everything computed from them is
forgotten, so results stay those of the current model.

Memory is bounded: kept tensors are evicted oldest first beyond ``budget``
bytes (a tensor that does not fit is not kept); a later run then simply
starts further upstream, at worst from the graph input.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import helper

from hwopt.calibration.inputs import real_inputs
from hwopt.calibration.samples import _DEFAULT_BATCH, OrtRunner, Samples, _session, run_batch, sample_count

DEFAULT_BUDGET = 512 * 2**20


class TensorCache:
    """Values of ``model``'s tensors on ``samples``, run segment by segment from what is already known."""

    def __init__(self, model: onnx.ModelProto, samples: Samples, budget: int = DEFAULT_BUDGET,
                 batch: int = _DEFAULT_BATCH) -> None:
        self.samples = samples
        self.total = sample_count(samples)
        self.budget = budget
        self.batch = batch
        self.values: OrderedDict[str, np.ndarray] = OrderedDict()  # oldest first (eviction order)
        self.last_segment = 0
        self.set_model(model)

    # -- the model ---------------------------------------------------------------------------

    def set_model(self, model: onnx.ModelProto, changed: list[str] = ()) -> None:
        """Switch to ``model`` (a rewrite of the current one) whose tensors ``changed`` took new values."""
        self.model = model
        self._producer = {out: i for i, node in enumerate(model.graph.node) for out in node.output if out}
        self._inputs = {v.name for v in real_inputs(model)}
        initializers = {t.name for t in model.graph.initializer}
        # Batched runs of a segment redeclare its inputs with a free batch dim; a graph input whose batch
        # is fixed above 1 may be hard-coded in the graph (reshapes): then always run the whole model.
        self._whole = any(_fixed_batch(v) not in (None, 1) for v in real_inputs(model)) or any(
            a.type == onnx.AttributeProto.GRAPH for node in model.graph.node for a in node.attribute)
        self._initializers = initializers
        stale = _descendants(model, set(changed)) | set(changed)
        for name in [n for n in self.values if n in stale or n not in self._producer]:
            del self.values[name]

    # -- runs --------------------------------------------------------------------------------

    def batches(
        self, wanted: list[str], keep: list[str] = (), progress: Callable[[int, int], None] | None = None
    ) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        """Yield (sample slice, {name: values}) for ``wanted`` over all samples, in batches.

        ``keep``: tensors among ``wanted`` to remember for later runs (if the budget allows).
        """
        wanted = list(dict.fromkeys(wanted))
        if self._whole:
            runner = OrtRunner(self.model, wanted, only_extra=True)
            yield from runner.iter_batches(self.samples, progress)
            return
        to_run = [n for n in wanted if n not in self.values and n not in self._inputs]
        nodes, feeds = self._segment(to_run)
        self.last_segment = len(nodes)  # how many nodes this run computes (for tests and profiling)
        sources = {name: self._source(name) for name in dict.fromkeys(feeds + wanted) if name not in to_run}
        to_keep = [n for n in dict.fromkeys(keep) if n in to_run]
        store: dict[str, np.ndarray] = {}
        segment = _segment_model(self.model, nodes, feeds, to_run, sources) if to_run else None
        session = _session(segment) if segment is not None else None
        one_by_one = False
        for start in range(0, self.total, self.batch):
            part = slice(start, min(start + self.batch, self.total))
            feed = {name: np.ascontiguousarray(sources[name][part]) for name in feeds}
            outputs: dict[str, np.ndarray] = {}
            if session is not None:
                values = None if one_by_one else run_batch(session, to_run, feed, part.stop - part.start)
                if values is None:
                    # A segment that hard-codes batch 1 (Reshape to [1, -1], ...): one sample at a time,
                    # still yielded in the same batches (callers zip two caches' batches together).
                    one_by_one = True
                    singles = [session.run(to_run, {k: v[i:i + 1] for k, v in feed.items()})
                               for i in range(part.stop - part.start)]
                    values = [np.concatenate(parts) for parts in zip(*singles)]
                outputs = dict(zip(to_run, values))
            for name in wanted:
                if name not in outputs:
                    outputs[name] = sources[name][part]
            if start == 0:
                store = self._reserve({n: outputs[n] for n in to_keep}, protect=set(sources))
            for name, array in store.items():
                array[part] = outputs[name]
            if part.stop == self.total:
                self.values.update(store)  # before the last yield: a zip() over two runs stops at it
            if progress is not None:
                progress(part.stop, self.total)
            yield part, outputs

    # -- helpers -----------------------------------------------------------------------------

    def _source(self, name: str) -> np.ndarray:
        if name in self.values:
            self.values.move_to_end(name)
            return self.values[name]
        return self.samples[name]

    def _segment(self, names: list[str]) -> tuple[list[int], list[str]]:
        """Indices of the nodes that compute ``names`` from known tensors, and the known tensors they read."""
        needed: set[int] = set()
        feeds: dict[str, None] = {}
        stack = list(names)
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen or not name:
                continue
            seen.add(name)
            if name in self.values or name in self._inputs:
                feeds[name] = None
                continue
            if name in self._initializers or name not in self._producer:
                continue
            index = self._producer[name]
            if index not in needed:
                needed.add(index)
                stack.extend(self.model.graph.node[index].input)
        return sorted(needed), list(feeds)

    def _reserve(self, first: dict[str, np.ndarray], protect: set[str]) -> dict[str, np.ndarray]:
        """Arrays for the tensors to keep (``first``: their first batch), after evicting the oldest kept
        tensors (not in ``protect``) to make room; a tensor that does not fit is not kept."""
        store: dict[str, np.ndarray] = {}
        for name, batch in first.items():
            size = self.total * (batch.nbytes // max(len(batch), 1))
            held = sum(a.nbytes for a in self.values.values()) + sum(a.nbytes for a in store.values())
            evictable = [n for n in self.values if n not in protect]
            while evictable and held + size > self.budget:
                held -= self.values.pop(evictable.pop(0)).nbytes
            if held + size <= self.budget:
                store[name] = np.empty((self.total, *batch.shape[1:]), dtype=batch.dtype)
        return store


def _fixed_batch(value: onnx.ValueInfoProto) -> int | None:
    dims = value.type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") else None


def _descendants(model: onnx.ModelProto, names: set[str]) -> set[str]:
    """Every tensor computed (directly or not) from ``names``."""
    reached = set(names)
    found: set[str] = set()
    for node in model.graph.node:  # topological order: one pass suffices
        if reached.intersection(node.input):
            reached.update(node.output)
            found.update(node.output)
    return found


def _segment_model(
    model: onnx.ModelProto, nodes: list[int], feeds: list[str], outputs: list[str], example: dict[str, np.ndarray]
) -> onnx.ModelProto:
    """A model of ``nodes`` that reads ``feeds`` and returns ``outputs``, with a free batch dim 'N'."""
    segment = onnx.ModelProto()
    segment.ir_version = model.ir_version
    segment.opset_import.extend(model.opset_import)
    graph = segment.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node[i] for i in nodes)
    used = {name for i in nodes for name in model.graph.node[i].input}
    graph.initializer.extend(t for t in model.graph.initializer if t.name in used and t.name not in example)
    for name in feeds:
        array = example[name]
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        graph.input.append(helper.make_tensor_value_info(name, elem, ["N", *array.shape[1:]]))
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
    for name in outputs:
        if name in types:
            graph.output.append(helper.make_tensor_value_info(name, types[name], None))
        else:
            graph.output.append(helper.make_empty_tensor_value_info(name))
    return segment
