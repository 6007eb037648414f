"""The one interface every rewrite rule keeps: find sites -> check -> apply(params).

A rule declares the kind of site it works on (``ibn``, ``dw``, ``ch``), its
parameters, and whether it preserves the model's function (exact). ``check``
says why a site is not eligible (or None); ``apply`` returns the rewritten
model and one outcome line per site. Verification against the input model is
done by the caller, the same way for every rule.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import onnx

from hwopt.errors import HwoptError
from hwopt.analysis.sites import Analysis, Site


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int, float or str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def parse(self, rule: str, raw: Any) -> Any:
        """Convert and validate a user value (from the command line or a rule file)."""
        if isinstance(raw, bool) and self.kind is not bool:
            # TOML's true would pass as 1: a typo, never a number.
            raise HwoptError(f"rule {rule}: parameter {self.name} must be {self.kind.__name__}, got {raw!r}")
        try:
            value = self.kind(raw)
        except (TypeError, ValueError, OverflowError):
            raise HwoptError(
                f"rule {rule}: parameter {self.name} must be {self.kind.__name__}, got {raw!r}"
            ) from None
        if self.kind is int and isinstance(raw, float) and raw != int(raw):
            raise HwoptError(f"rule {rule}: parameter {self.name} must be an integer, got {raw!r}")
        if self.kind is float and not math.isfinite(value):
            raise HwoptError(f"rule {rule}: parameter {self.name} must be a finite number, got {raw!r}")
        if self.choices and value not in self.choices:
            raise HwoptError(
                f"rule {rule}: parameter {self.name} must be one of {', '.join(self.choices)}, got {raw!r}"
            )
        if self.minimum is not None and value < self.minimum:
            raise HwoptError(f"rule {rule}: parameter {self.name} must be >= {self.minimum}, got {raw!r}")
        if self.maximum is not None and value > self.maximum:
            raise HwoptError(f"rule {rule}: parameter {self.name} must be <= {self.maximum}, got {raw!r}")
        return value

    def describe(self) -> str:
        allowed = f" ({'|'.join(self.choices)})" if self.choices else ""
        return f"{self.name}={self.default}{allowed}: {self.help}"


@dataclass
class RewriteContext:
    """What a rule may use besides the graph: calibration data, a seed, a progress callback."""

    calibration: dict[str, np.ndarray]
    evaluation: dict[str, np.ndarray]  # held-out inputs for per-site deviation figures
    seed: int = 0
    progress: Callable[[str, int, int], None] | None = None

    def report(self, label: str) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        progress = self.progress
        return lambda done, total: progress(label, done, total)


@dataclass
class SiteOutcome:
    site: str
    detail: str
    figures: dict[str, float] = field(default_factory=dict)


class Rule(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    site_kind: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    # A lowering changes how an op is lowered, not the kernels' geometry: the estimators cannot price it,
    # so optimize lets the target's whole-model judge decide (``[lower.NAME]`` in rule files).
    lowering: ClassVar[bool] = False

    def parse_params(self, raw: dict[str, Any]) -> dict[str, Any]:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise HwoptError(f"rule {self.name}: unknown parameter {unknown[0]!r} (parameters: {allowed})")
        return {name: (p.parse(self.name, raw[name]) if name in raw else p.default) for name, p in known.items()}

    @abstractmethod
    def is_exact(self, params: dict[str, Any]) -> bool:
        """Whether the rewrite preserves the model's function with these parameters."""

    def find_sites(self, analysis: Analysis) -> list[Site]:
        return analysis.of_kind(self.site_kind)

    @abstractmethod
    def check(self, site: Site, params: dict[str, Any], analysis: Analysis) -> str | None:
        """Why the rule cannot apply at ``site`` with ``params``, or None when it can."""

    @abstractmethod
    def apply(
        self, analysis: Analysis, sites: list[Site], params: dict[str, Any], ctx: RewriteContext
    ) -> tuple[onnx.ModelProto, list[SiteOutcome]]:
        """Rewrite ``analysis.model`` at ``sites`` (all checked) and return the new model."""
