"""Stage 9b, recovery: label-free distillation of a rewritten model from its original (PyTorch, extra ``recover``).

``module`` runs an ONNX graph as a trainable torch module (``ops``: the operator
registry), ``regions`` finds the rewritten blocks, ``train`` is the recipe
(block-wise reconstruction, then end-to-end distillation, with ``augment`` and
``losses``), ``writeback`` puts the trained weights into hwopt's graph and checks
it with onnxruntime. Nothing outside this package imports torch; call
``require_torch()`` before importing its modules.
"""

from __future__ import annotations

from hwopt.errors import HwoptError

EXTRA_HINT = "pip install 'hwopt[recover]' (CPU-only PyTorch: see docs/recover.md)"


def require_torch() -> None:
    """Raise a one-line HwoptError naming the extra when PyTorch is not installed."""
    try:
        import torch  # noqa: F401 - only whether it imports
    except ImportError:
        raise HwoptError(f"recovery needs PyTorch, which is not installed: {EXTRA_HINT}") from None
