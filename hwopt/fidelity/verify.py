"""Comparing two models' outputs with onnxruntime on the same inputs.

Exact means every output matches the reference within
``max |candidate - reference| <= ATOL + RTOL * max |reference|`` (fp32: rtol
1e-4, atol 1e-5): allclose's tolerance taken against the output's scale
rather than element by element. Element by element is below the fp32 noise
floor of deep nets: onnxruntime's own optimization levels disagree by 6e-4
on SSDLite box outputs of magnitude 24 (elements near zero then fail any
elementwise rtol), while a wrong rewrite errs by orders of magnitude more. For every output we also report relative L2 error, cosine
similarity, relative max-abs error and, for outputs that look like class
scores (rank 2 or 3 with at least 10 classes on the last axis), top-1
agreement over the last axis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from hwopt.calibration.samples import OrtRunner, Samples, sample_count
from hwopt.errors import HwoptError, VerificationError

RTOL = 1e-4
ATOL = 1e-5
_MIN_CLASSES = 10


@dataclass
class OutputComparison:
    name: str
    max_abs_err: float
    rel_max_abs_err: float  # max |a - b| / max |reference|
    rel_l2: float
    cosine: float
    within_tolerance: bool
    top1_agreement: float | None = None


@dataclass
class Comparison:
    samples: int
    outputs: list[OutputComparison] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return all(o.within_tolerance for o in self.outputs)

    @property
    def worst_rel_max_abs(self) -> float:
        return max((o.rel_max_abs_err for o in self.outputs), default=0.0)

    @property
    def worst_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    @property
    def worst_rel_l2(self) -> float:
        return max((o.rel_l2 for o in self.outputs), default=0.0)

    def to_dict(self) -> dict:
        return {"samples": self.samples, "exact": self.exact, "outputs": [asdict(o) for o in self.outputs]}


def compare_arrays(name: str, reference: np.ndarray, candidate: np.ndarray) -> OutputComparison:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"output {name!r}: shapes differ {ref.shape} vs {cand.shape}")
    # One difference and dot products on flat views: segmentation maps are millions of elements per
    # sample, and this runs for every step and variant (same figures as norm(), abs().max()).
    ref_flat, cand_flat = ref.ravel(), cand.ravel()
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf outputs: the figures say so (not within tolerance)
        return _compare_flat(name, ref, cand, ref_flat, cand_flat)


def _compare_flat(name: str, ref: np.ndarray, cand: np.ndarray, ref_flat: np.ndarray,
                  cand_flat: np.ndarray) -> OutputComparison:
    diff = cand_flat - ref_flat
    max_abs = float(max(diff.max(initial=0.0), -diff.min(initial=0.0)))
    ref_scale = float(max(ref_flat.max(initial=0.0), -ref_flat.min(initial=0.0)))
    ref_norm = float(np.sqrt(np.dot(ref_flat, ref_flat)))
    cand_norm = float(np.sqrt(np.dot(cand_flat, cand_flat)))
    diff_norm = float(np.sqrt(np.dot(diff, diff)))
    rel_l2 = diff_norm / ref_norm if ref_norm else (0.0 if cand_norm == 0 else np.inf)
    if ref_norm and cand_norm:
        cosine = float(np.dot(ref_flat, cand_flat) / (ref_norm * cand_norm))
    else:
        cosine = 1.0 if ref_norm == cand_norm else 0.0
    top1 = None
    if ref.ndim in (2, 3) and ref.shape[-1] >= _MIN_CLASSES:
        top1 = float(np.mean(ref.argmax(axis=-1) == cand.argmax(axis=-1)))
    return OutputComparison(
        name=name,
        max_abs_err=max_abs,
        rel_max_abs_err=max_abs / ref_scale if ref_scale else max_abs,
        rel_l2=rel_l2,
        cosine=cosine,
        within_tolerance=bool(max_abs <= ATOL + RTOL * ref_scale),
        top1_agreement=top1,
    )


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> Comparison:
    names = list(reference)
    samples = len(next(iter(reference.values()))) if reference else 0
    return Comparison(samples, [compare_arrays(n, reference[n], candidate[n]) for n in names])


class ModelOutputs:
    """Graph outputs of models on one input set, each model run once.

    ``apply`` verifies a chain of models (each step against its input, the last against the original)
    and ``optimize`` materialises several variants of one original: without this most models would run
    two or more times. Models are recognised by identity (rewrites always return a new model) and the
    ``size`` most recently used are remembered.
    """

    def __init__(self, inputs: Samples, size: int = 8) -> None:
        self.inputs = inputs
        self.size = size
        self._runs: list[tuple[onnx.ModelProto, dict[str, np.ndarray]]] = []  # most recent last

    def of(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        for i, (known, outputs) in enumerate(self._runs):
            if known is model:
                self._runs.append(self._runs.pop(i))
                return outputs
        outputs = OrtRunner(model).run_all(self.inputs, [o.name for o in model.graph.output])
        self._runs = self._runs[-(self.size - 1):] + [(model, outputs)] if self.size > 1 else [(model, outputs)]
        return outputs


def _run(run, what: str) -> dict[str, np.ndarray]:
    """``run()``; onnxruntime's failures (a Gather index out of range, ...) as one line."""
    try:
        return run()
    except HwoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        if type(exc).__module__.split(".")[0] != "onnxruntime":
            raise
        kind = HwoptError if what == "the model" else VerificationError
        raise kind(f"onnxruntime cannot run {what}: {str(exc).strip().splitlines()[0][:300]}") from None


def check_finite_outputs(values: dict[str, np.ndarray], inputs: str) -> None:
    """HwoptError when a model's outputs on ``inputs`` (what they were, for the message) hold NaN or Inf."""
    for name, array in values.items():
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise HwoptError(f"the model's output {name!r} holds NaN or Inf on {inputs}: hwopt verifies every "
                             f"rewrite on the outputs and cannot on these")


def reference_outputs(model: onnx.ModelProto, outputs: ModelOutputs, inputs: str) -> dict[str, np.ndarray]:
    """The user's model's outputs (memoised in ``outputs``), checked to run and to be finite."""
    values = _run(lambda: outputs.of(model), "the model")
    check_finite_outputs(values, inputs)
    return values


def compare_models(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, inputs: Samples, outputs: ModelOutputs | None = None,
    check_reference: bool = False,
) -> Comparison:
    """Run both models on ``inputs`` and compare every graph output of the reference.

    ``outputs``: a memo of model outputs on these same ``inputs`` (models already run are not run again).
    ``check_reference``: the reference's outputs must be finite (HwoptError if not). A model onnxruntime
    cannot run is a HwoptError (VerificationError for the candidate).
    """
    names = [o.name for o in reference.graph.output]
    if outputs is not None and outputs.inputs is inputs:
        ref_all = _run(lambda: outputs.of(reference), "the model")
        cand_all = _run(lambda: outputs.of(candidate), "the rewritten model")
        ref = {n: ref_all[n] for n in names}
        cand = {n: cand_all[n] for n in names}
    else:
        ref = _run(lambda: OrtRunner(reference).run_all(inputs, names), "the model")
        cand = _run(lambda: OrtRunner(candidate).run_all(inputs, names), "the rewritten model")
    if check_reference:
        check_finite_outputs(ref, "random inputs")
    comparison = compare_outputs(ref, cand)
    comparison.samples = sample_count(inputs)
    return comparison
