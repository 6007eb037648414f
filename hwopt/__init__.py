"""hwopt: curated, verified graph rewrites that make ONNX vision models fast on accelerators."""

__version__ = "0.1.0"
