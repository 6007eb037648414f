"""ONNX -> int8 TFLite, written by hwopt itself (no TensorFlow), for compilers that read TFLite (Arm's
Vela for Ethos-U). ``writer.write_tflite`` is the entry; ``litert.run_tflite`` runs the result in ONNX terms.

Stage 6 (measurement), for the vela backend: ``writer`` (the model), ``fusion`` (which nodes become one
operator), ``registry`` and ``ops`` with ``ops_*`` (one converter per ONNX op type), ``quantize``
(per-channel int8 weights, calibrated activation ranges), ``layout`` and ``padding`` (NHWC), ``graph``
and ``schema`` (the flatbuffer), ``context`` (what a converter works with).
"""
