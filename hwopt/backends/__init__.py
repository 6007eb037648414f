"""Stage 6, measurement: backends by the name a target file gives in ``backend = "..."``.

Each entry names a factory ``module:attribute`` imported only when used, so
a backend's heavy dependencies (or a backend not installed yet) cost nothing
to the others. A factory takes the ``Target`` and returns an object with the
``Backend`` protocol (``hwopt.backends.base``). ``MODEL_MEASURERS`` name the
function that measures a whole model on a target (``f(model_path_or_proto,
target)`` returning an object with ``latency_us``, ``backend`` and ``meta``):
onnxruntime times the model end to end; scalesim sums its simulated kernels
through ``hwopt.backends.scalesim.measure_model_npu32``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hwopt.errors import HwoptError

BACKENDS: dict[str, str] = {
    "onnxruntime": "hwopt.backends.ort_cpu:OrtBackend",
    "table": "hwopt.backends.table:TableBackend",
    "scalesim": "hwopt.backends.scalesim:ScaleSimBackend",
    "vela": "hwopt.backends.vela:VelaBackend",
}

MODEL_MEASURERS: dict[str, str] = {
    "onnxruntime": "hwopt.backends.ort_cpu:measure_model",
    "scalesim": "hwopt.backends:scalesim_model",
    "vela": "hwopt.backends.vela:measure_model",
}

# Backends that can give each kernel its cost inside a whole model (``hwopt profile --in-context``): a
# function ``f(model_path_or_proto, target)`` returning a ``hwopt.backends.vela_context.ModelInContext``.
IN_CONTEXT_MEASURERS: dict[str, str] = {
    "vela": "hwopt.backends.vela_context:model_in_context",
}

# How much work measuring a kernel is, relatively, where a backend knows better than its MACs.
WORK_ESTIMATES: dict[str, str] = {
    "scalesim": "hwopt.backends.scalesim:simulation_cost",
}

# Judges that schedule across layers (Vela cascades and buffers weights between them), so a model's time is
# not the sum of its kernels compiled alone: the search's "auto" cost model will not fall back to them.
WHOLE_MODEL_JUDGES = {"vela"}

# Backends whose whole-model measurement is the truth and cheap enough (seconds) to check every finalist of a
# search: optimize measures the finalists and the original on them by default and never writes a model they
# measure slower (hwopt.search.optimize). npu32 (SCALE-Sim, minutes per model) is not one.
FINALIST_JUDGES = WHOLE_MODEL_JUDGES | {"onnxruntime"}

# What to tell the user when a backend's module is absent from this install.
_MISSING = {"scalesim": "the npu32 (scalesim) backend is not installed"}


def _resolve(table: dict[str, str], name: str, what: str) -> Callable[..., Any]:
    if name not in table:
        raise HwoptError(f"no {what} for backend {name!r} (known: {', '.join(sorted(table))})")
    module_name, attribute = table[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):  # the backend module itself, not one of its imports
            raise HwoptError(_MISSING.get(name, f"the {name} backend is not installed")) from None
        raise
    found = getattr(module, attribute, None)
    if found is None:
        raise HwoptError(f"the {name} backend has no {attribute} ({what})")
    return found


@dataclass
class ModelMeasurement:
    """A whole model's latency from a per-kernel backend (the sum of its kernels)."""

    latency_us: float
    backend: str
    meta: dict = field(default_factory=dict)
    kernels: list = field(default_factory=list)  # (Kernel, measured us) per scheduled kernel, when known


def scalesim_model(model, target, progress: Callable[[str, int, int], None] | None = None) -> ModelMeasurement:
    """npu32: the model's kernels simulated by SCALE-Sim and summed (the scalesim module's helper), plus the
    DRAM charge of the weights and activations that do not fit the target's memory budget
    (``hwopt.estimator.memory.POLICY``; ``meta["onchip"]`` says what lives where).

    The helper wants a canonical model (shapes inferred), so the model is canonicalised here.
    ``progress(label, done, total)``: the stages (canonicalising, then the simulated layers), which take
    minutes on a large model.
    """
    helper = _resolve({"scalesim": "hwopt.backends.scalesim:measure_model_npu32"}, "scalesim", "model helper")
    from hwopt.canonical.canonicalize import canonicalize
    from hwopt.io.model import load_model

    proto = load_model(model) if isinstance(model, (str, Path)) else model
    if progress:
        progress("canonicalising", 0, 1)
    canonical, _ = canonicalize(proto, verify=False)
    if progress:
        progress("canonicalising", 1, 1)
    layers = (lambda done, total: progress("SCALE-Sim: distinct layers simulated or cached", done, total)) \
        if progress else None
    total_us, measurements = helper(canonical, target, progress=layers)
    from hwopt.analysis.kernels import schedule
    from hwopt.estimator.memory import on_chip, param_bytes, peak_activation_bytes

    sched = schedule(canonical, target.fusion)
    memory = on_chip(param_bytes(sched, target.parallelism, target.dtype_bytes),
                     peak_activation_bytes(sched, target.parallelism, target.dtype_bytes), target)
    charge = memory.charge_us if memory is not None else 0.0
    meta = {"kernels": len(measurements), "target": target.name, "hardware_class": target.class_name,
            "kernel_sum_us": float(total_us), "memory_charge_us": charge,
            "onchip": None if memory is None else memory.to_dict()}
    return ModelMeasurement(float(total_us) + charge, "scalesim", meta,
                            [(m.kernel, float(m.latency_us)) for m in measurements])


def get_backend(target, **options: Any):
    """The measurement backend for ``target`` (by ``target.backend``)."""
    return _resolve(BACKENDS, target.backend, "measurement backend")(target, **options)


def model_measurer(target) -> Callable[..., Any]:
    """The whole-model measuring function for ``target``'s backend."""
    return _resolve(MODEL_MEASURERS, target.backend, "whole-model measurement")


def in_context_measurer(target) -> Callable[..., Any]:
    """The per-kernel in-model measuring function for ``target``'s backend (refused in one line elsewhere)."""
    if target.backend not in IN_CONTEXT_MEASURERS:
        raise HwoptError(f"--in-context: the {target.backend} backend cannot attribute a whole model's time to "
                         f"its kernels (backends that can: {', '.join(sorted(IN_CONTEXT_MEASURERS))})")
    return _resolve(IN_CONTEXT_MEASURERS, target.backend, "in-context measurement")


def work_estimate(target) -> Callable[..., float]:
    """A relative measuring cost per kernel for ``target``'s backend (its own, else the kernel's MACs)."""
    if target.backend in WORK_ESTIMATES:
        return _resolve(WORK_ESTIMATES, target.backend, "work estimate")
    return lambda kernel: float(kernel.macs)
