"""fuse-ibn: expand 1x1 -> act -> depthwise KxK becomes one KxK standard conv (inexact).

The fused conv keeps the depthwise conv's stride, padding, dilation and output
tensor, so the block's depthwise activation, squeeze-excite and project conv
stay in place. Its weights cannot be copied (an activation sat between the two
convs), so they are fitted, block after block in graph order, like layer-wise
post-training reconstruction:

1. the fused conv, by ridge least squares, so that its pre-activation output
   matches the original block's depthwise pre-activation output, from the
   block input as the already-rewritten model computes it (earlier blocks'
   errors are compensated), pulled toward the linear composition of the two
   kernels; with ``project=refit`` (and a clipping activation, no SE) it is
   then refined jointly with a least-squares project conv toward the
   original block output, a few L-BFGS steps on the same rows
   (``ConvLeastSquares.refine_through_linear``): only what the project conv
   reads matters, not each hidden channel;
2. then (``project=refit``) the project 1x1 conv, so that the block output
   matches the original's from the new hidden activations, each output
   channel's variance matched to the original's (least squares shrinks it,
   and the BatchNorm-calibrated layers downstream expect the original's
   spread: on the MobileNetV2 example this takes the final output's cosine
   similarity from 0.88 to 0.94).

``init=linear`` (the linear composition alone) and ``init=random`` are the
baselines the refit is measured against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hwopt.analysis.blocks import IBNBlock
from hwopt.analysis.activations import Activation, clip_bounds
from hwopt.calibration.samples import OrtRunner, sample_count
from hwopt.rewrites.fitting import ConvLeastSquares, linear_fusion_init
from hwopt.analysis.graph import (conv_attrs, conv_bias, conv_node_attrs, conv_weight, export_graph, patch_conv_params,
                         set_conv_params)
from hwopt.rewrites.base import Param, RewriteContext, Rule, SiteOutcome
from hwopt.analysis.sites import Analysis, Site
from hwopt.calibration.tensor_cache import TensorCache
from hwopt.fidelity.verify import compare_outputs


def _bias_or_zeros(node: gs.Node, channels: int) -> np.ndarray:
    bias = conv_bias(node)
    return bias if bias is not None else np.zeros(channels, dtype=np.float32)


def _clip_range(acts: list[Activation]) -> tuple[float, float] | None:
    """The (low, high) range of a clipping activation right after the fused conv, else None."""
    if not acts:
        return None
    first = acts[0]
    if first.kind == "relu":
        return 0.0, np.inf
    if first.kind in ("relu6", "clip"):
        if first.kind == "relu6":
            return 0.0, 6.0
        low, high = clip_bounds(first.nodes[0]) if first.nodes[0].op == "Clip" else (None, None)
        return (low, high) if low is not None else None
    return None


def _fit_conv(
    fitter: ConvLeastSquares, source: TensorCache, x_name: str, reference: TensorCache, y_name: str,
    progress, minus: str | None = None, keep: tuple[list[str], list[str]] = ([], []),
    aux: tuple[str, str | None] | None = None,
) -> None:
    """Accumulate ``fitter`` with inputs from ``source`` and targets from ``reference``, batch by batch.

    ``minus``: a tensor of ``source`` subtracted from the target (a residual branch's other operand).
    ``keep``: tensors of (source, reference) among those read to cache for the next blocks' runs.
    ``aux``: (tensor of ``reference``, tensor of ``source`` to subtract or None): the fitter's aux targets.
    """
    extra = [aux[1]] if aux and aux[1] else []
    inputs = source.batches(list(dict.fromkeys([x_name] + ([minus] if minus else []) + extra)), keep=keep[0],
                            progress=progress)
    targets = reference.batches(list(dict.fromkeys([y_name] + keep[1] + ([aux[0]] if aux else []))), keep=keep[1])
    for (_, x), (_, y) in zip(inputs, targets):
        target = y[y_name] - x[minus] if minus else y[y_name]
        aux_target = None if aux is None else (y[aux[0]] - x[aux[1]] if aux[1] else y[aux[0]])
        fitter.update(x[x_name], target, aux=aux_target)


def _refit_conv(
    node: gs.Node, current: TensorCache, reference: TensorCache, target: str, ridge: float,
    ctx: RewriteContext, label: str, minus: str | None = None, clip: tuple[float, float] | None = None,
    match_variance: bool = False,
) -> None:
    """Refit a (group 1) conv of ``current`` so that it reproduces ``reference``'s tensor ``target``."""
    attrs = conv_attrs(node)
    fitter = ConvLeastSquares(attrs.in_channels, attrs.out_channels, attrs.kernel, attrs.strides, attrs.pads,
                              attrs.dilations, seed=ctx.seed, samples=sample_count(ctx.calibration))
    # The conv's input is kept: a refit changes only what comes after it, so the next run starts there.
    _fit_conv(fitter, current, node.inputs[0].name, reference, target, ctx.report(label), minus,
              keep=([node.inputs[0].name], []))
    weight, bias = fitter.solve(conv_weight(node), _bias_or_zeros(node, attrs.out_channels), ridge=ridge, clip=clip,
                                 match_variance=match_variance)
    set_conv_params(node, weight, bias, "refit")


def _refit_project(block: IBNBlock, current: TensorCache, reference: TensorCache, ridge: float,
                   ctx: RewriteContext, label: str, match_variance: bool = True) -> None:
    if block.residual is not None:
        # Fit the block output (project + skip) to the original's, from the skip as the rewritten model
        # has it: the project conv then also absorbs upstream error carried by the residual stream.
        _refit_conv(block.project, current, reference, block.output.name, ridge, ctx, label, minus=block.input.name,
                    match_variance=match_variance)
    else:
        _refit_conv(block.project, current, reference, block.project.outputs[0].name, ridge, ctx, label,
                    match_variance=match_variance)


class FuseIBN(Rule):
    name = "fuse-ibn"
    summary = "IBN expand 1x1 + depthwise KxK -> one KxK conv, weights refit on calibration data"
    site_kind = "ibn"
    params = (
        Param("init", str, "lstsq", "how the fused weights are made", choices=("lstsq", "linear", "random")),
        Param("project", str, "refit", "refit the project conv afterwards (lstsq only) or keep it",
              choices=("refit", "keep")),
        # Least squares shrinks the project output's spread; "match" restores each channel's variance
        # (what BatchNorm-calibrated layers downstream expect: better cosine, but it amplifies a poor
        # fit's noise, so rel L2 over many fused blocks grows).
        Param("variance", str, "match", "project refit: match each output channel's variance to the original's, "
              "or keep the least-squares output", choices=("match", "lstsq")),
        Param("ridge", float, 1e-3, "ridge strength (relative to the data scale) toward the linear init",
              minimum=0.0, maximum=1e6),
    )

    def is_exact(self, params: dict[str, Any]) -> bool:
        return False

    def check(self, site: Site, params: dict[str, Any], analysis: Analysis) -> str | None:
        if site.target.expand is None:
            return "the block has no expand conv (nothing to fuse)"
        return None

    def apply(
        self, analysis: Analysis, sites: list[Site], params: dict[str, Any], ctx: RewriteContext
    ) -> tuple[onnx.ModelProto, list[SiteOutcome]]:
        reference = analysis.model
        blocks = [site.target for site in sites]
        # Described before the rewrite: export detaches the replaced convs from the graph.
        shapes = [f"{b.in_channels}->{b.hidden_channels} k{b.dw_attrs.kernel[0]} s{b.dw_attrs.strides[0]}"
                  for b in blocks]
        rng = np.random.default_rng(ctx.seed)
        current = reference
        fitting = params["init"] == "lstsq"
        # Each block's fit reads both models at that block: runs start from the tensors kept at the
        # previous block instead of the graph input (linear, not quadratic, in depth).
        runs = (TensorCache(current, ctx.calibration), TensorCache(reference, ctx.calibration)) if fitting else None
        for number, block in enumerate(blocks, 1):
            label = f"fuse-ibn: block {number}/{len(blocks)}"
            weight, bias = self._fused_weights(block, runs, params, ctx, rng, label)
            fused = self._replace(analysis.graph, block, weight, bias)
            if fitting:
                # The next fit reads this block's rewritten output: materialise the model so far (only
                # run on calibration data until the last export: no shape inference).
                current = export_graph(analysis.graph, reference, shapes=False)
                runs[0].set_model(current, changed=[fused.outputs[0].name])
                if params["project"] == "refit":
                    _refit_project(block, *runs, params["ridge"], ctx, label + " (project)",
                                   match_variance=params["variance"] == "match")
                    # Only weights changed: patched in, not exported again.
                    patch_conv_params(current, block.project)
                    runs[0].set_model(current, changed=[block.project.outputs[0].name])
        current = export_graph(analysis.graph, reference)
        return current, self._outcomes(reference, current, sites, blocks, shapes, params, ctx)

    def _fused_weights(
        self, block: IBNBlock, runs: tuple[TensorCache, TensorCache] | None, params, ctx, rng, label
    ) -> tuple[np.ndarray, np.ndarray]:
        hidden = block.hidden_channels
        w0, b0 = linear_fusion_init(
            conv_weight(block.expand), _bias_or_zeros(block.expand, hidden),
            conv_weight(block.depthwise), _bias_or_zeros(block.depthwise, hidden),
        )
        if params["init"] == "linear":
            return w0, b0
        if params["init"] == "random":
            fan_in = w0[0].size
            return rng.normal(0, np.sqrt(2.0 / fan_in), w0.shape).astype(np.float32), np.zeros_like(b0)
        attrs = block.dw_attrs
        fitter = ConvLeastSquares(block.in_channels, hidden, attrs.kernel, attrs.strides, attrs.pads,
                                  attrs.dilations, seed=ctx.seed, samples=sample_count(ctx.calibration))
        x_name = block.expand.inputs[0].name
        clip = _clip_range(block.depthwise_acts)
        # With the project refit, the fused conv is then refined jointly with a project conv toward the
        # original block output (what the block must reproduce), not only per hidden channel.
        joint = clip is not None and block.se is None and params["project"] == "refit"
        aux = (block.output.name, block.input.name if block.residual is not None else None) if joint else None
        # Keep the block input of both models (the project refit starts there) and the original's block
        # output (the project refit's target, and where the next block's reference run starts).
        _fit_conv(fitter, runs[0], x_name, runs[1], block.depthwise.outputs[0].name, ctx.report(label),
                  keep=([x_name], [x_name, block.output.name]), aux=aux)
        weight, bias = fitter.solve(w0, b0, ridge=params["ridge"], clip=clip)
        return fitter.refine_through_linear(weight, bias, clip) if joint else (weight, bias)

    @staticmethod
    def _replace(graph: gs.Graph, block: IBNBlock, weight: np.ndarray, bias: np.ndarray) -> gs.Node:
        """The fused conv takes the expand conv's input and produces the depthwise conv's output tensor."""
        dw = block.depthwise
        fused = gs.Node(
            "Conv",
            name=block.expand.name,
            attrs=conv_node_attrs(block.dw_attrs, group=1),
            inputs=[block.expand.inputs[0], gs.Constant(f"{block.expand.name}_W_fused", weight),
                    gs.Constant(f"{block.expand.name}_B_fused", bias)],
            outputs=[dw.outputs[0]],
        )
        dw.outputs.clear()
        block.expand.outputs.clear()
        graph.nodes.append(fused)
        return fused

    def _outcomes(self, before, after, sites, blocks, shapes, params, ctx) -> list[SiteOutcome]:
        """Each block's output deviation on held-out inputs (the whole model is verified by the caller)."""
        names = [block.output.name for block in blocks]
        reference = OrtRunner(before, names, only_extra=True).run_all(ctx.evaluation)
        candidate = OrtRunner(after, names, only_extra=True).run_all(ctx.evaluation)
        comparison = compare_outputs(reference, candidate)
        outcomes = []
        how = params["init"] + (", project refit" if params["init"] == "lstsq" and params["project"] == "refit"
                                else "")
        for site, shape, figures in zip(sites, shapes, comparison.outputs):
            outcomes.append(SiteOutcome(
                site.id,
                f"{shape} fused ({how}); block output cosine {figures.cosine:.4f}, rel L2 {figures.rel_l2:.3f}",
                {"block_cosine": figures.cosine, "block_rel_l2": figures.rel_l2},
            ))
        return outcomes
