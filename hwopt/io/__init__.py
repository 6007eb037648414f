"""Stage 1, files: reading a user's ONNX file safely and writing every file whole.

``model`` (load/save, input shapes, non-finite checks),
``held_weights`` (weights over protobuf's 2 GiB limit), ``atomic`` (temporary + rename),
``outputs`` (output paths checked before any work, and the external-data files a model names),
``cache`` (hwopt's cache folder),
``tomlfile`` (the TOML files an expert edits).
"""
