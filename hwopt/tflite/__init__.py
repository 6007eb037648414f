"""ONNX -> int8 TFLite, written by hwopt itself (no TensorFlow), for compilers that read TFLite (Arm's
Vela for Ethos-U). ``write_tflite`` is the entry; ``litert.run_tflite`` runs the result in ONNX terms."""

from hwopt.tflite.writer import Boundary, WriteResult, convert_model, write_tflite

__all__ = ["Boundary", "WriteResult", "convert_model", "write_tflite"]
