"""hwopt: curated, verified graph rewrites that make ONNX vision models fast on accelerators."""

import os as _os

# onnxruntime (1.32) otherwise keeps a telemetry database of ~2 MB under ~/.cache/Microsoft, uploads from
# it, and prints a warning on every run where that folder is read-only. Set before onnxruntime is imported
# (every hwopt module imports this package first); a user's own ORT_DISABLE_TELEMETRY=0 still wins.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
