"""Targets: small declarative files that say what an accelerator is and how it is measured.

A shipped target lives in ``estimator/<name>/target.toml`` (beside its trained
estimator); a user's own is any TOML path. Schema::

    name = "npu32"
    description = "32x32 weight-stationary systolic array (TPU-like), SCALE-Sim"
    parallelism = 32            # P: lanes working on channels at once
    dtype = "int8"              # element type the target computes in
    backend = "scalesim"        # scalesim | onnxruntime | table
    memory_budget_bytes = 4194304   # on-chip memory for weights + live activations (0: no budget)
    offchip_bytes_per_us = 32000    # DRAM bandwidth for what does not fit the budget (0: no charge;
                                    # hwopt.estimator.memory.POLICY states the policy)
    depthwise = "array"             # hardware class: where depthwise convs run (DEPTHWISE_CLASSES)

    [fusion]                    # what the target runs as one kernel
    activation = true           # conv/gemm/eltwise + its activation chain
    view_ops_free = true        # Reshape & co. are metadata (cost 0, stated)
    blocked_layout = ""         # "onnxruntime-nchwc": cost the runtime's layout conversions (hwopt.analysis.layout)
    separate = []               # activation kinds run as their own kernels, never fused (Ethos-U: ["prelu"])
    chain_elementwise = false   # an Add/Mul/... runs inside the kernel run just before it (Ethos-U85's chaining)
    activation_into_any = false # pools and elementwise ops by a constant take the activation after them too (Vela)
    nhwc_views = false          # a Transpose + Reshape that moves no data in NHWC storage is a view (hwopt's TFLite writer)

    [backend_settings]          # passed to the backend as is
    ...

    [vector_unit]               # cost model of non-conv kernels (where the backend has one)
    ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwopt.errors import HwoptError
from hwopt.io.tomlfile import read_toml
from hwopt.analysis.kernel import FusionPolicy

# The default of every command: an NPU whose truth is its vendor's own toolchain (Arm's Vela for Ethos-U), not
# a cost model this project configured (npu32, cpu are one -t away). U55-256: the common microcontroller-class
# Ethos-U configuration (Cortex-M55 + Ethos-U55).
DEFAULT_TARGET = "ethos-u55-256"
# The hardware class of a target: where it runs a depthwise conv. Every rule is judged per class: a
# rewrite that packs depthwise convs into grouped ones helps an array-only accelerator and hurts one
# with a depthwise engine (Ethos-U, Edge TPU, Vitis AI DPU).
DEPTHWISE_CLASSES = {
    "array": "array-only: depthwise convs run on the array, channel after channel (pipelined)",
    "vector": "depthwise engine: depthwise convs run on the vector unit (K*K MACs per output over its lanes)",
}
_DTYPE_BYTES = {"int8": 1, "uint8": 1, "fp16": 2, "bf16": 2, "fp32": 4, "float32": 4}


def data_root() -> Path:
    """The folder holding ``estimator/`` and ``rules/`` (HWOPT_DATA, else the source checkout)."""
    override = os.environ.get("HWOPT_DATA")
    return Path(override) if override else Path(__file__).resolve().parent.parent


def estimator_root() -> Path:
    return data_root() / "estimator"


@dataclass
class Target:
    name: str
    description: str
    parallelism: int
    dtype: str
    backend: str
    memory_budget_bytes: int
    fusion: FusionPolicy
    backend_settings: dict[str, Any] = field(default_factory=dict)
    vector_unit: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    depthwise: str = "array"  # DEPTHWISE_CLASSES
    offchip_bytes_per_us: float = 0.0  # DRAM bandwidth charged for what exceeds memory_budget_bytes (0: none)

    @property
    def hardware_class(self) -> str:
        """Which hardware class the target's results hold for (said beside every figure), in a sentence."""
        return DEPTHWISE_CLASSES[self.depthwise]

    @property
    def class_name(self) -> str:
        """The hardware class in two words: "array-only" or "depthwise engine"."""
        return self.hardware_class.split(":")[0]

    @property
    def dtype_bytes(self) -> int:
        return _DTYPE_BYTES[self.dtype]

    @property
    def folder(self) -> Path:
        """Where this target's estimator, tables and card live."""
        assert self.path is not None
        return self.path.parent

    @property
    def shipped(self) -> bool:
        """A target installed with hwopt (its folder is part of the installation, not the user's)."""
        return self.path is not None and estimator_root().resolve() in self.path.resolve().parents


def _require(data: dict, key: str, kind: type, where: Path) -> Any:
    if key not in data:
        raise HwoptError(f"{where}: target file lacks {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HwoptError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


# Activations that are one node in a canonical graph, so one kernel when run apart ([fusion] separate). A
# hard-swish or SiLU is two nodes there (x * hardsigmoid(x), x * sigmoid(x)) and cannot be cut out as one.
SEPARABLE = ("prelu", "leakyrelu", "relu", "relu6", "clip", "sigmoid", "hardsigmoid", "tanh")


def _separate(fusion: dict, path: Path) -> tuple[str, ...]:
    kinds = fusion.get("separate", [])
    if not isinstance(kinds, list) or not all(isinstance(k, str) and k.lower() in SEPARABLE for k in kinds):
        raise HwoptError(f"{path}: [fusion] separate must be a list of one-node activation kinds among "
                         f"{', '.join(SEPARABLE)}, got {kinds!r}")
    return tuple(k.lower() for k in kinds)


def _blocked_layout(fusion: dict, path: Path) -> str:
    from hwopt.analysis.layout import LAYOUTS

    layout = str(fusion.get("blocked_layout", ""))
    if layout not in LAYOUTS:
        raise HwoptError(f"{path}: [fusion] blocked_layout must be one of {', '.join(repr(x) for x in LAYOUTS)}")
    return layout


def load_target_file(path: str | Path) -> Target:
    path = Path(path)
    data = read_toml(path, "target file")
    dtype = _require(data, "dtype", str, path)
    if dtype not in _DTYPE_BYTES:
        raise HwoptError(f"{path}: dtype {dtype!r} is not one of {', '.join(_DTYPE_BYTES)}")
    parallelism = _require(data, "parallelism", int, path)
    if not 1 <= parallelism <= 1024:
        raise HwoptError(f"{path}: parallelism must be 1 to 1024, got {parallelism}")
    budget = data.get("memory_budget_bytes", 0)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
        raise HwoptError(f"{path}: memory_budget_bytes must be a non-negative integer, got {budget!r}")
    fusion = data.get("fusion", {})
    depthwise = data.get("depthwise", "array")
    if depthwise not in DEPTHWISE_CLASSES:
        raise HwoptError(f"{path}: depthwise must be one of {', '.join(repr(c) for c in DEPTHWISE_CLASSES)}, "
                         f"got {depthwise!r}")
    bandwidth = data.get("offchip_bytes_per_us", 0)
    if not isinstance(bandwidth, (int, float)) or isinstance(bandwidth, bool) or not 0 <= bandwidth < float("inf"):
        raise HwoptError(f"{path}: offchip_bytes_per_us must be a finite number >= 0, got {bandwidth!r}")
    return Target(
        name=_require(data, "name", str, path),
        description=str(data.get("description", "")),
        parallelism=parallelism,
        dtype=dtype,
        backend=_require(data, "backend", str, path),
        memory_budget_bytes=budget,
        fusion=FusionPolicy(activation=bool(fusion.get("activation", True)),
                            activation_chain=bool(fusion.get("activation_chain", True)),
                            view_ops_free=bool(fusion.get("view_ops_free", True)),
                            blocked_layout=_blocked_layout(fusion, path),
                            separate=_separate(fusion, path),
                            chain_elementwise=bool(fusion.get("chain_elementwise", False)),
                            activation_into_any=bool(fusion.get("activation_into_any", False)),
                            nhwc_views=bool(fusion.get("nhwc_views", False))),
        backend_settings=dict(data.get("backend_settings", {})),
        vector_unit=dict(data.get("vector_unit", {})),
        path=path.resolve(),
        depthwise=depthwise,
        offchip_bytes_per_us=float(bandwidth),
    )


def shipped_targets() -> list[str]:
    root = estimator_root()
    return sorted(p.parent.name for p in root.glob("*/target.toml"))


def load_target(name_or_path: str | Path = DEFAULT_TARGET) -> Target:
    """A shipped target by name, or a target file by path."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        return load_target_file(text)
    path = estimator_root() / text / "target.toml"
    if not path.is_file():
        raise HwoptError(f"unknown target {text!r} (targets: {', '.join(shipped_targets()) or 'none'})")
    return load_target_file(path)
