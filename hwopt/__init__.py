"""hwopt: curated, verified graph rewrites that make ONNX vision models fast on accelerators.

The packages follow the data, stage by stage:

1. ``io``: read the user's ONNX file safely, write every file whole;
2. ``canonical``: the exact clean-up every model gets before rules see it;
3. ``analysis``: sites, blocks, channel groups, and the kernels a target executes;
4. ``calibration``: samples (files, photos, random), held-out splits, internal tensors;
5. ``rewrites``: the rules (one per module), applying and refitting them;
6. ``backends``: measuring kernels and models on a target (``targets`` says what a target is);
7. ``estimator``: the learned per-kernel cost model, its kernel sweep and training;
8. ``search``: the variants, their scores, budgets and the chosen model;
9. ``fidelity`` and ``recover``: how well a rewrite keeps the task, and winning it back by training;
10. ``report``: what the commands found, for people and tools;
11. ``cli``: the ``hwopt`` command, one module per command (parse and print only).

``executors`` runs independent work (sweep batches, whole models) locally or on Ray. The root holds
only what every stage shares: ``errors``, ``units``, ``progress`` and ``targets``.
"""

import os as _os

# onnxruntime (1.32) otherwise keeps a telemetry database of ~2 MB under ~/.cache/Microsoft, uploads from
# it, and prints a warning on every run where that folder is read-only. Set before onnxruntime is imported
# (every hwopt module imports this package first); a user's own ORT_DISABLE_TELEMETRY=0 still wins.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

# The Python API (hwopt.api, hwopt.request), imported on first use so that `import hwopt.<stage>` stays light.
_API = {"optimize": "hwopt.api", "estimate": "hwopt.api", "measure": "hwopt.api", "apply": "hwopt.api",
        "Result": "hwopt.api", "OptimizeRequest": "hwopt.request", "Recovery": "hwopt.request",
        "HwoptError": "hwopt.errors", "DEFAULT_TARGET": "hwopt.targets"}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'hwopt' has no attribute {name!r}")
