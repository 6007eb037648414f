"""Stage 4, calibration data: calibration samples and the tensors a model computes on them.

``inputs`` (a model's real inputs and their sample shapes), ``samples`` (loading .npz / random
inputs, held-out splits, batched onnxruntime runs), ``images`` (a folder of photos as samples),
``tensor_cache`` (internal tensors on every sample, computed incrementally for refits).
"""
