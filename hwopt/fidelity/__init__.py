"""Stage 9a, fidelity: how well a rewritten model still does the original's job.

``metrics`` (task metrics: top-1 agreement, cosine, rel-L2, ...; the automatic choice),
``verify`` (two models' outputs compared with onnxruntime: exact or the measured deviation).
"""
