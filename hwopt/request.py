"""What to optimize for: one frozen request, built by the CLI, by model batches and by Python users alike.

``OptimizeRequest`` holds every setting of ``hwopt optimize`` except the model and where files go: the
target, the budgets, the fidelity budget, the rules, the data, the search settings and recovery. It is
checked when it is made (one ``HwoptError`` line, before any work), and ``to_dict`` / ``from_dict``
round-trip it through JSON: the report records it under ``request``, and a batch task sees exactly what
the user asked for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwopt.errors import HwoptError
from hwopt.targets import DEFAULT_TARGET


@dataclass(frozen=True)
class Recovery:
    """``--recover``: distil the fastest finalists from the original on the calibration samples."""

    seconds: float | None = 600.0  # time budget shared by the recovered finalists (None: epochs only)
    epochs: int | None = None  # epochs per finalist (deterministic on CPU); with seconds: a cap
    finalists: int = 2  # how many of the fastest finalists are recovered
    reach: float = 0.1  # also recover the fastest variant predicted within min_fidelity minus this
    threads: int | None = None  # torch CPU threads (None: torch's default); search.recovery reads it
    # Labelled calibration data (hwopt.calibration.labels; read only for recovery): retrain on the labels too.
    labels: str = "auto"  # auto (an .npz's 'label' array) | folders (also ImageFolder trees) | none
    label_weight: float = 0.5  # the cross-entropy's weight in the end-to-end loss (1 - it: distillation)
    max_accuracy_drop: float = 0.01  # with labels: a recovered model's held-out accuracy below the original's

    def __post_init__(self) -> None:
        if self.seconds is None and self.epochs is None:
            raise HwoptError("recovery needs a time budget or a number of epochs")
        if self.seconds is not None and not self.seconds > 0:
            raise HwoptError(f"recovery time must be positive, got {self.seconds}")
        if self.epochs is not None and self.epochs < 1:
            raise HwoptError(f"recovery epochs must be >= 1, got {self.epochs}")
        if self.finalists < 1:
            raise HwoptError(f"recovery finalists must be >= 1, got {self.finalists}")
        if not 0.0 <= self.reach <= 1.0:
            raise HwoptError(f"recovery reach must be in [0, 1], got {self.reach}")
        from hwopt.calibration.labels import check_mode

        check_mode(self.labels)
        for name in ("label_weight", "max_accuracy_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise HwoptError(f"recovery {name.replace('_', ' ')} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class OptimizeRequest:
    """Every setting of one optimization; the defaults are ``hwopt optimize``'s.

    Budgets accept numbers (bytes, microseconds) or text with a unit (``"4MiB"``, ``"2.5ms"``); they are
    stored as numbers. Paths accept ``str`` or ``Path``.
    """

    target: str = DEFAULT_TARGET  # a shipped target name or a target TOML path
    # Budgets (None: none).
    max_memory: int | None = None  # bytes: parameters + peak activations at the target's dtype
    max_latency: float | None = None  # microseconds, estimated
    max_deviation: float | None = None  # worst relative L2 output error vs the original (held-out samples)
    # Task fidelity.
    fidelity: str = "auto"  # a metric of hwopt.fidelity.metrics.METRICS, or auto
    min_fidelity: float | None = None  # default: the metric's own (top-1 agreement 0.99, ...)
    for_retraining: bool = False  # no fidelity budget: the weights only initialise training
    fidelity_model: str = "log"  # how decisions' fidelity costs combine: log | linear
    # What a rewrite must buy: a share of the original's latency (estimated; measured where finalists are timed).
    min_gain: float = 0.01
    # Rules and search.
    rules: Path | None = None  # a rule set with a [search] table (default: rules/default.toml)
    exact_only: bool = False  # function-preserving rewrites only
    strategy: str = "auto"
    cost: str = "auto"  # auto | estimator | backend
    allow_fallback: bool = False  # score kernels the estimator never saw by a flagged roofline
    finalists: int = 3  # variants materialised and verified per search round
    verify_front: int = 0  # also materialise and verify up to this many rows of the fidelity front
    compare: bool = True  # materialise each rule-alone row too
    measure: bool = False  # also measure each compared variant on the target
    measure_finalists: bool | None = None  # time every finalist (default: on targets measured locally)
    pick: str | None = None  # an id on an earlier report's fronts to write instead (p3)
    seed: int = 0
    # Data.
    input_shapes: tuple[str, ...] = ()  # NAME=1x3x224x224, for dynamic dims
    calibration: Path | None = None  # .npz (one array per input) or a folder of photos; None: random inputs
    preprocess: str | None = None  # for a folder of photos: imagenet | 0-1 | 0-255, plus bgr, nhwc|nchw
    calibration_samples: int = 64  # samples the refits fit on
    eval_samples: int | None = None  # at most this many held-out samples judge the result
    holdout: float = 0.25  # held-out share (< 1) or count (>= 1), whole groups where known
    recover: Recovery | None = None

    def __post_init__(self) -> None:
        from hwopt.search.objective import parse_bytes, parse_latency

        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if isinstance(self.max_memory, str):
            put("max_memory", parse_bytes(self.max_memory))
        if isinstance(self.max_latency, str):
            put("max_latency", parse_latency(self.max_latency))
        for name in ("rules", "calibration"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                put(name, Path(value))
        if isinstance(self.input_shapes, (str, Path)):
            put("input_shapes", (str(self.input_shapes),))
        put("input_shapes", tuple(str(s) for s in self.input_shapes))
        if isinstance(self.recover, dict):
            put("recover", Recovery(**self.recover))
        self._check()

    def _check(self) -> None:
        from hwopt.fidelity.metrics import METRICS
        from hwopt.search.cost import COST_MODELS
        from hwopt.search.sensitivity import FidelityModel
        from hwopt.search.strategies import STRATEGIES

        if self.fidelity != "auto" and self.fidelity not in METRICS:
            raise HwoptError(f"--fidelity {self.fidelity!r}: metrics are auto, {', '.join(METRICS)}")
        if self.fidelity_model not in FidelityModel.MODES:
            raise HwoptError(f"--fidelity-model {self.fidelity_model!r}: one of {', '.join(FidelityModel.MODES)}")
        if self.for_retraining and self.min_fidelity is not None:
            raise HwoptError("--for-retraining asks for no fidelity budget: drop --min-fidelity (or keep the budget)")
        if self.min_fidelity is not None and not 0.0 <= self.min_fidelity <= 1.0:
            raise HwoptError(f"--min-fidelity {self.min_fidelity}: a fraction in [0, 1]")
        if not 0.0 <= self.min_gain < 1.0:
            raise HwoptError(f"--min-gain {self.min_gain}: a share of the original's latency in [0, 1), e.g. 0.01")
        if not self.holdout > 0:
            raise HwoptError(f"--holdout {self.holdout}: a fraction in (0, 1) or a sample count >= 1")
        if self.strategy != "auto" and self.strategy not in STRATEGIES:
            raise HwoptError(f"--strategy {self.strategy!r}: one of auto, {', '.join(STRATEGIES)}")
        if self.cost not in COST_MODELS:
            raise HwoptError(f"--cost {self.cost!r}: one of {', '.join(COST_MODELS)}")
        if self.pick is not None and not (self.pick[:1] == "p" and self.pick[1:].isdigit()):
            raise HwoptError(f"--pick {self.pick!r}: an id from a report's fronts, like p3")
        for name in ("finalists", "calibration_samples"):
            if getattr(self, name) < 1:
                raise HwoptError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise HwoptError(f"--eval-samples must be >= 1, got {self.eval_samples}")
        if self.verify_front < 0:
            raise HwoptError(f"--verify-front must be >= 0, got {self.verify_front}")
        self.budgets()  # positive, finite budgets

    # What the stages take.

    def budgets(self):
        """The latency, memory and deviation budgets (``hwopt.search.objective.Budgets``)."""
        from hwopt.search.objective import Budgets

        return Budgets(self.max_memory, self.max_latency, self.max_deviation)

    def shapes(self) -> list:
        """``input_shapes`` parsed (``hwopt.io.model.InputShape``)."""
        from hwopt.io.model import parse_input_shapes

        return parse_input_shapes(self.input_shapes)

    def split(self, model):
        """The fit / held-out split of this request's calibration data for ``model`` (the original)."""
        from hwopt.calibration.samples import calibration_split

        # Labels only matter to recovery: without it they are never read (whatever the data holds).
        return calibration_split(model, path=self.calibration, count=self.calibration_samples,
                                 eval_count=self.eval_samples, seed=self.seed, preprocess=self.preprocess,
                                 holdout=self.holdout, labels=self.recover.labels if self.recover else "none")

    def check_inputs(self) -> None:
        """Before any long work: the files this request reads exist and a photo folder is readable."""
        from hwopt.calibration.samples import check_calibration_source

        check_calibration_source(self.calibration, self.preprocess)

    # JSON.

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Recovery):
                value = dataclasses.asdict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OptimizeRequest":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HwoptError(f"unknown optimize setting {unknown[0]!r} (settings: {', '.join(sorted(known))})")
        return cls(**data)

    def replace(self, **changes: Any) -> "OptimizeRequest":
        return dataclasses.replace(self, **changes)
