"""Stage 2, canonicalisation: the exact clean-up every model gets before rules see it.

``canonicalize`` drives it (onnxruntime's basic optimizer, then the passes below, each verified
exact); one pass per module: ``clip`` (Min/Max -> Clip), ``hard_sigmoid``, ``reshape`` (flatten
spelled as Reshape), ``views`` (view chains that end where they began); ``edit`` holds the small
GraphProto helpers the passes share.
"""
