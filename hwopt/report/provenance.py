"""Where an estimate comes from, for the reports: the estimator card's held-out error, the kernels scored
by the roofline fallback, and (when a backend measured the kernels) estimate against measurement per kernel."""

from __future__ import annotations

from typing import Any, Sequence

from hwopt.analysis.kernel import Kernel


def estimator_provenance(estimator, fallbacks: Sequence[str] = ()) -> dict[str, Any]:
    from hwopt.search.figures import card_summary

    return {"cost_model": f"estimator ({estimator.target.name})", "fallback_kernels": list(fallbacks),
            "card": card_summary(estimator.folder)}


def per_kernel(estimator, measured: Sequence[tuple[Kernel, float]]) -> list[dict[str, Any]]:
    """Estimated (isolated, as the backend measures a kernel) against measured microseconds per kernel."""
    kernels = [k for k, _ in measured]
    estimated = estimator.predict(kernels, allow_fallback=True, isolated=True)
    return [{"kernel": k.describe(), "estimated_us": float(e), "measured_us": float(m)}
            for (k, m), e in zip(measured, estimated)]
