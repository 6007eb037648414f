"""Measurement backends, by the name a target file gives in ``backend = "..."``.

Each entry names a factory ``module:attribute`` imported only when used, so
a backend's heavy dependencies (or a backend not installed yet) cost nothing
to the others. A factory takes the ``Target`` and returns an object with the
``Backend`` protocol (``hwopt.backends.base``). ``MODEL_MEASURERS`` name the
function that measures a whole model on a target (``f(model_path, target)``
returning an object with ``latency_us``, or a number of microseconds).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from hwopt.errors import HwoptError

BACKENDS: dict[str, str] = {
    "onnxruntime": "hwopt.backends.ort_cpu:OrtBackend",
    "table": "hwopt.backends.table:TableBackend",
    "scalesim": "hwopt.backends.scalesim:ScaleSimBackend",
}

MODEL_MEASURERS: dict[str, str] = {
    "onnxruntime": "hwopt.backends.ort_cpu:measure_model",
    "scalesim": "hwopt.backends.scalesim:measure_model",
}

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


def get_backend(target, **options: Any):
    """The measurement backend for ``target`` (by ``target.backend``)."""
    return _resolve(BACKENDS, target.backend, "measurement backend")(target, **options)


def model_measurer(target) -> Callable[..., Any]:
    """The whole-model measuring function for ``target``'s backend."""
    return _resolve(MODEL_MEASURERS, target.backend, "whole-model measurement")
