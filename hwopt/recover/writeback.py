"""Trained weights back into hwopt's ONNX graph, checked with onnxruntime.

Only initializer values change (``numpy_helper``, matched by name): nodes,
names and shapes stay exactly as hwopt wrote them, so reports, rule files and
site ids still describe the written model.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from hwopt.calibration.samples import OrtRunner, Samples
from hwopt.errors import VerificationError
from hwopt.recover.module import OnnxModule
from hwopt.fidelity.verify import Comparison, compare_outputs


def with_weights(model: onnx.ModelProto, module: OnnxModule) -> onnx.ModelProto:
    """A copy of ``model`` whose trainable initializers hold ``module``'s current values."""
    values = {name: p.detach().cpu().numpy() for name, p in module.named_onnx_parameters()}
    for name, value in values.items():
        if not np.isfinite(value).all():
            raise VerificationError(f"recovery produced non-finite weights in {name} (try a lower --lr)")
    written = onnx.ModelProto()
    written.CopyFrom(model)
    for index, tensor in enumerate(written.graph.initializer):
        if tensor.name in values:
            written.graph.initializer[index].CopyFrom(numpy_helper.from_array(values[tensor.name].astype(np.float32),
                                                                               tensor.name))
    return written


def torch_outputs(module: OnnxModule, samples: Samples, batch: int = 32) -> dict[str, np.ndarray]:
    """``module``'s graph outputs on ``samples`` (numpy), in batches, without gradients."""
    total = len(next(iter(samples.values())))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in module.output_names}
    device = next(iter(module.params.values())).device
    with torch.no_grad():
        for start in range(0, total, batch):
            feeds = {k: torch.from_numpy(np.ascontiguousarray(v[start:start + batch])).to(device)
                     for k, v in samples.items()}
            for name, value in module.run(feeds, module.output_names).items():
                parts[name].append(value.cpu().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def check_against_torch(written: onnx.ModelProto, module: OnnxModule, samples: Samples) -> Comparison:
    """onnxruntime on the written model vs the torch module on the same samples, within hwopt's exact
    tolerance (max abs error <= 1e-5 + 1e-4 x max |output|, ``hwopt.fidelity.verify``); else an error."""
    ours = torch_outputs(module, samples)
    theirs = OrtRunner(written).run_all(samples)
    comparison = compare_outputs(ours, {name: theirs[name] for name in ours})
    if not comparison.exact:
        raise VerificationError(f"the written model does not reproduce the trained module in onnxruntime: relative "
                                f"max-abs error {comparison.worst_rel_max_abs:.2e} (please report this model)")
    return comparison
