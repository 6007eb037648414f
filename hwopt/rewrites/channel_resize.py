"""Changing the channel count of a channel group: pad, trim or extend, then refit.

A plan says which old channels stay (in order) and how many new ones are
appended. Producers lose or gain output rows, pass-through ops (depthwise
convs, BatchNorm, per-channel constants) follow, consumers lose or gain input
columns. New channels are either zeros with zero consumer weights (exact
padding) or copies of existing channels with noise (extension, useful only
after the consumers are refit). Trimmed or extended groups get their
consumers refit by ridge least squares on calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from hwopt.calibration.samples import OrtRunner, sample_count
from hwopt.analysis.channel_groups import ChannelGroup, GroupConsumer
from hwopt.rewrites.fitting import ConvLeastSquares
from hwopt.analysis.graph import Node, constant_value, conv_attrs, conv_bias, set_constant_input, set_conv_params


@dataclass
class ChannelPlan:
    keep: np.ndarray  # indices of the old channels that stay, ascending
    added: int  # channels appended after the kept ones
    new_init: str  # "zero" (exact padding) or "copy" (extension to be refit)
    templates: np.ndarray  # for "copy": the old channel each new channel starts from

    @property
    def channels(self) -> int:
        return len(self.keep) + self.added

    @property
    def needs_refit(self) -> bool:
        return self.new_init == "copy"


def pad_plan(old: int, new: int) -> ChannelPlan:
    return ChannelPlan(np.arange(old), new - old, "zero", np.zeros(0, dtype=np.int64))


def channel_importance(group: ChannelGroup) -> np.ndarray:
    """L1 norm of each channel's filters, each producer normalised so none dominates by scale."""
    score = np.zeros(group.channels, dtype=np.float64)
    for node in group.producers:
        weight = constant_value(node.inputs[1]).astype(np.float64)
        norms = np.abs(weight).reshape(weight.shape[0], -1).sum(axis=1)
        score += norms / max(norms.mean(), 1e-12)
    return score


def trim_plan(group: ChannelGroup, new: int) -> ChannelPlan:
    """Keep the ``new`` most important channels (by L1 norm), in their original order."""
    order = np.argsort(-channel_importance(group), kind="stable")
    return ChannelPlan(np.sort(order[:new]), 0, "copy", np.zeros(0, dtype=np.int64))


def extend_plan(group: ChannelGroup, new: int) -> ChannelPlan:
    """Keep every channel and add ``new - old`` copies of the most important ones."""
    order = np.argsort(-channel_importance(group), kind="stable")
    added = new - group.channels
    templates = order[np.arange(added) % group.channels]
    return ChannelPlan(np.arange(group.channels), added, "copy", templates)


def resize_plan(group: ChannelGroup, new: int) -> ChannelPlan:
    """Trim when fewer channels are asked for, otherwise extend (both need a refit)."""
    if new < group.channels:
        return trim_plan(group, new)
    return extend_plan(group, new)


def _keeps_all(plan: ChannelPlan, channels: int) -> bool:
    """True when the plan keeps every channel in order (pad): no gather needed (a big weight's copy)."""
    return plan.keep.size == channels and bool(np.all(plan.keep == np.arange(channels)))


def _rows(values: np.ndarray, plan: ChannelPlan, axis: int, new_rows: np.ndarray) -> np.ndarray:
    kept = values if _keeps_all(plan, values.shape[axis]) else np.take(values, plan.keep, axis=axis)
    return np.concatenate([kept, new_rows.astype(values.dtype)], axis=axis)


def _new_rows(values: np.ndarray, plan: ChannelPlan, axis: int, neutral: float, rng, noise: float) -> np.ndarray:
    shape = list(values.shape)
    shape[axis] = plan.added
    if plan.new_init == "zero" or plan.added == 0:
        return np.full(shape, neutral, dtype=values.dtype)
    copies = np.take(values, plan.templates, axis=axis)
    if noise:
        scale = float(np.std(values)) or 1.0
        copies = copies + rng.normal(0.0, noise * scale, copies.shape).astype(values.dtype)
    return copies


def _resize_output_channels(node: Node, plan: ChannelPlan, rng: np.random.Generator, tag: str,
                            weight_noise: float) -> None:
    """A conv's weight and bias rows to ``plan.channels`` output channels (new rows copied from templates)."""
    weight = constant_value(node.inputs[1])
    set_constant_input(node, 1, _rows(weight, plan, 0, _new_rows(weight, plan, 0, 0.0, rng, weight_noise)), f"W_{tag}")
    bias = conv_bias(node)
    if bias is not None:
        set_constant_input(node, 2, _rows(bias, plan, 0, _new_rows(bias, plan, 0, 0.0, rng, 0.0)), f"B_{tag}")


def resize_group(group: ChannelGroup, plan: ChannelPlan, rng: np.random.Generator, tag: str) -> None:
    """Edit the graph's weights in place so that the group has ``plan.channels`` channels."""
    for node in group.producers:
        _resize_output_channels(node, plan, rng, tag, weight_noise=0.1)
    for node in group.depthwise:
        _resize_output_channels(node, plan, rng, tag, weight_noise=0.0)
        node.attrs["group"] = plan.channels
    for use in group.params:
        value = constant_value(use.node.inputs[use.input_index])
        new_rows = _new_rows(value, plan, use.axis, use.neutral, rng, 0.0)
        set_constant_input(use.node, use.input_index, _rows(value, plan, use.axis, new_rows), f"p{use.input_index}_{tag}")
    for use in group.shapes:
        value = constant_value(use.node.inputs[use.input_index]).copy()
        value[use.position] = plan.channels
        set_constant_input(use.node, use.input_index, value, f"s{use.input_index}_{tag}")
    for consumer in group.consumers:
        _resize_consumer_columns(consumer, plan, tag)


def _column_index(plan: ChannelPlan, spatial: int) -> np.ndarray:
    """Flattened column index of the kept channels (each channel spans ``spatial`` columns)."""
    return (plan.keep[:, None] * spatial + np.arange(spatial)[None, :]).reshape(-1)


def _resize_consumer_columns(consumer: GroupConsumer, plan: ChannelPlan, tag: str) -> None:
    node = consumer.node
    weight = constant_value(node.inputs[1])
    if node.op == "Conv":
        zeros = np.zeros((weight.shape[0], plan.added, *weight.shape[2:]), dtype=weight.dtype)
        kept = weight if _keeps_all(plan, weight.shape[1]) else weight[:, plan.keep]
        set_constant_input(node, 1, np.concatenate([kept, zeros], axis=1), f"Wc_{tag}")
        return
    # Dense consumer: columns of the (K, M) matrix, K = channels * spatial.
    matrix = dense_matrix(node)
    cols = _column_index(plan, consumer.spatial)
    zeros = np.zeros((plan.added * consumer.spatial, matrix.shape[1]), dtype=matrix.dtype)
    set_dense_matrix(node, np.concatenate([matrix[cols], zeros], axis=0), tag)


def dense_matrix(node: Node) -> np.ndarray:
    """A Gemm/MatMul weight as a (K, M) matrix (input features by outputs)."""
    weight = constant_value(node.inputs[1])
    if node.op == "Gemm" and int(node.attrs.get("transB", 0)):
        return weight.T
    return weight


def set_dense_matrix(node: Node, matrix: np.ndarray, tag: str) -> None:
    if node.op == "Gemm" and int(node.attrs.get("transB", 0)):
        matrix = matrix.T
    set_constant_input(node, 1, matrix, f"Wc_{tag}")


# -- refitting consumers ------------------------------------------------------


@dataclass
class RefitJob:
    consumer: GroupConsumer
    input_name: str  # tensor read by the consumer (group tensor, before any flatten)
    output_name: str  # consumer output: the target it should keep producing
    columns: np.ndarray  # channels of the source tensor that remain
    rows: np.ndarray | None  # output channels that remain, when the consumer is itself trimmed
    fitter: ConvLeastSquares
    ridge: float


def refit_consumers(
    resized: list[tuple[ChannelGroup, ChannelPlan]],
    source_model: onnx.ModelProto,
    source_is_reference: bool,
    calibration: dict[str, np.ndarray],
    ridge: float,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Least-squares refit of the resized groups' consumers; returns the names of those refit.

    Inputs and targets come from one run of ``source_model``: the model before
    trimming (``source_is_reference``: inputs restricted to the kept channels,
    targets to the kept rows of consumers that were trimmed too), or the exact
    zero-column extension (every channel). Each layer is fitted locally.
    """
    kept_rows = {}
    if source_is_reference:
        kept_rows = {node.name: plan.keep for group, plan in resized for node in group.producers}
    jobs: list[RefitJob] = []
    samples = sample_count(calibration)
    for group, plan in resized:
        if not plan.needs_refit:
            continue
        columns = plan.keep if source_is_reference else np.arange(plan.channels)
        for consumer in group.consumers:
            node = consumer.node
            if node.op == "MatMul":
                continue  # no bias term to fit into; keep the sliced weights
            if node.op == "Conv":
                attrs = conv_attrs(node)
                fitter = ConvLeastSquares(plan.channels, attrs.out_channels, attrs.kernel, attrs.strides,
                                          attrs.pads, attrs.dilations, seed=seed, samples=samples)
            else:
                matrix = dense_matrix(node)
                fitter = ConvLeastSquares(matrix.shape[0], matrix.shape[1], (1, 1), seed=seed, samples=samples)
            jobs.append(RefitJob(consumer, consumer.input.name, node.outputs[0].name, columns,
                                 kept_rows.get(node.name), fitter, ridge))
    if not jobs:
        return []
    names = sorted({j.input_name for j in jobs} | {j.output_name for j in jobs})
    # Only the nodes these tensors need (a detector's heads, say, are not run).
    runner = OrtRunner(source_model, extra_outputs=names, only_extra=True)
    for _, outputs in runner.iter_batches(calibration, progress=progress):
        for job in jobs:
            x = outputs[job.input_name][:, job.columns]
            y = outputs[job.output_name]
            if job.rows is not None:
                y = y[:, job.rows]
            if job.consumer.node.op == "Conv":
                job.fitter.update(x, y)
            else:
                job.fitter.update_rows(x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1))
    for job in jobs:
        _write_refit(job)
    return [j.consumer.node.name for j in jobs]


def _write_refit(job: RefitJob) -> None:
    node = job.consumer.node
    if node.op == "Conv":
        weight = constant_value(node.inputs[1])
        bias = conv_bias(node)
        b0 = bias if bias is not None else np.zeros(weight.shape[0], dtype=weight.dtype)
        w, b = job.fitter.solve(weight, b0, ridge=job.ridge)
        set_conv_params(node, w, b, "refit")
        return
    # Gemm: fit the effective y = x @ (alpha * W) + beta * C, then store with alpha = beta = 1.
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    matrix = dense_matrix(node) * alpha
    c = constant_value(node.inputs[2]) if len(node.inputs) > 2 else None
    b0 = (beta * c).reshape(-1) if c is not None else np.zeros(matrix.shape[1], dtype=matrix.dtype)
    if b0.size != matrix.shape[1]:
        b0 = np.broadcast_to(b0, (matrix.shape[1],)).copy()
    w, b = job.fitter.solve(matrix.T.reshape(matrix.shape[1], matrix.shape[0], 1, 1), b0, ridge=job.ridge)
    set_dense_matrix(node, w.reshape(matrix.shape[1], matrix.shape[0]).T, "refit")
    node.attrs["alpha"] = 1.0
    node.attrs["beta"] = 1.0
    set_constant_input(node, 2, b, "C_refit")
