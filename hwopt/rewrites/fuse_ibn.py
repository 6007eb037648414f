"""fuse-ibn: expand 1x1 -> act -> depthwise KxK becomes one KxK standard conv (inexact).

The fused conv keeps the depthwise conv's stride, padding, dilation and output
tensor, so the block's depthwise activation, squeeze-excite and project conv
stay as they were. Its weights cannot be copied (an activation sat between
the two convs): they are fitted by ridge least squares so that the fused
conv's pre-activation output matches the original depthwise pre-activation
output on calibration inputs, starting from (and pulled toward) the linear
composition of the two kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hwopt.calibration import OrtRunner
from hwopt.fitting import ConvLeastSquares, linear_fusion_init
from hwopt.graph import conv_bias, conv_node_attrs, conv_weight, export_graph
from hwopt.rewrites.base import Param, RewriteContext, Rule, SiteOutcome
from hwopt.sites import Analysis, Site
from hwopt.verify import compare_outputs


def _bias_or_zeros(node: gs.Node, channels: int) -> np.ndarray:
    bias = conv_bias(node)
    return bias if bias is not None else np.zeros(channels, dtype=np.float32)


class FuseIBN(Rule):
    name = "fuse-ibn"
    summary = "IBN expand 1x1 + depthwise KxK -> one KxK conv, weights refit on calibration data"
    site_kind = "ibn"
    params = (
        Param("init", str, "lstsq", "how the fused weights are made", choices=("lstsq", "linear", "random")),
        Param("ridge", float, 1e-3, "ridge strength (relative to the data scale) toward the linear init",
              minimum=0.0),
    )

    def is_exact(self, params: dict[str, Any]) -> bool:
        return False

    def check(self, site: Site, params: dict[str, Any], analysis: Analysis) -> str | None:
        block = site.target
        if block.expand is None:
            return "the block has no expand conv (nothing to fuse)"
        return None

    def apply(
        self, analysis: Analysis, sites: list[Site], params: dict[str, Any], ctx: RewriteContext
    ) -> tuple[onnx.ModelProto, list[SiteOutcome]]:
        blocks = [site.target for site in sites]
        weights = self._fused_weights(analysis.model, blocks, params, ctx)
        for block, (weight, bias) in zip(blocks, weights):
            dw = block.depthwise
            attrs = block.dw_attrs
            fused = gs.Node(
                "Conv",
                name=block.expand.name,
                attrs=conv_node_attrs(attrs, group=1),
                inputs=[block.expand.inputs[0], gs.Constant(f"{block.expand.name}_W_fused", weight),
                        gs.Constant(f"{block.expand.name}_B_fused", bias)],
                outputs=[dw.outputs[0]],
            )
            dw.outputs.clear()  # the fused conv now produces the depthwise output tensor
            block.expand.outputs.clear()
            analysis.graph.nodes.append(fused)
        model = export_graph(analysis.graph, analysis.model)
        return model, self._outcomes(analysis.model, model, sites, blocks, params, ctx)

    def _fused_weights(self, model, blocks, params, ctx) -> list[tuple[np.ndarray, np.ndarray]]:
        inits = []
        for block in blocks:
            hidden = block.hidden_channels
            inits.append(linear_fusion_init(
                conv_weight(block.expand), _bias_or_zeros(block.expand, hidden),
                conv_weight(block.depthwise), _bias_or_zeros(block.depthwise, hidden),
            ))
        if params["init"] == "linear":
            return inits
        if params["init"] == "random":
            rng = np.random.default_rng(ctx.seed)
            out = []
            for weight, bias in inits:
                fan_in = weight[0].size
                out.append((rng.normal(0, np.sqrt(2.0 / fan_in), weight.shape).astype(np.float32),
                            np.zeros_like(bias)))
            return out
        fitters = []
        for block in blocks:
            attrs = block.dw_attrs
            fitters.append(ConvLeastSquares(block.in_channels, block.hidden_channels, attrs.kernel,
                                            attrs.strides, attrs.pads, attrs.dilations, seed=ctx.seed))
        names = [t for b in blocks for t in (b.expand.inputs[0].name, b.depthwise.outputs[0].name)]
        runner = OrtRunner(model, extra_outputs=sorted(set(names)))
        for _, outputs in runner.iter_batches(ctx.calibration, progress=ctx.report("fuse-ibn: calibration")):
            for block, fitter in zip(blocks, fitters):
                fitter.update(outputs[block.expand.inputs[0].name], outputs[block.depthwise.outputs[0].name])
        return [fitter.solve(w0, b0, ridge=params["ridge"]) for fitter, (w0, b0) in zip(fitters, inits)]

    def _outcomes(self, before, after, sites, blocks, params, ctx) -> list[SiteOutcome]:
        """Each block's output deviation on held-out inputs (the whole model is verified by the caller)."""
        names = [block.output.name for block in blocks]
        reference = OrtRunner(before, extra_outputs=names).run_all(ctx.evaluation)
        candidate = OrtRunner(after, extra_outputs=names).run_all(ctx.evaluation)
        comparison = compare_outputs({n: reference[n] for n in names}, {n: candidate[n] for n in names})
        outcomes = []
        for site, block, figures in zip(sites, blocks, comparison.outputs):
            attrs = block.dw_attrs
            outcomes.append(SiteOutcome(
                site.id,
                f"{block.in_channels}->{block.hidden_channels} k{attrs.kernel[0]} s{attrs.strides[0]} "
                f"fused ({params['init']}); block output cosine {figures.cosine:.4f}, rel L2 {figures.rel_l2:.3f}",
                {"block_cosine": figures.cosine, "block_rel_l2": figures.rel_l2},
            ))
        return outcomes
