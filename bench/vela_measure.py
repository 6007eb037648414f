"""Vela's latency of the shipped MobileNetV2 example and of real exports (the six in tests/data, and
*(downloads)* PP-OCRv4's text detector from the rapidocr wheel and the trained case's pretrained
EfficientNet-Lite0), on the four Ethos-U targets, and how long writing the TFLite and compiling it took
(cache off: every figure is a real compile). The issue's bar: a whole-model MobileNetV2 measure <= 10 s on
2 cores, writing included.

    python -m bench.vela_measure [--out build] [--no-downloads]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from hwopt.backends.vela import measure_model
from hwopt.io.model import InputShape, apply_input_shapes, load_model
from hwopt.targets import load_target

TARGETS = ["ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256"]
DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
EXPORTS = {  # file -> input shape where the export leaves one dynamic
    "torch_dynamo_mobilenet_v3_small_w025.onnx": None,
    "torch_dynamo_efficientnet_b0_w025.onnx": None,
    "torch_dynamo_lraspp_mobilenet_v3_large_w025.onnx": None,
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": "x=1x3x48x192",
    "mediapipe_face_detection_short_range_tflite2onnx.onnx": None,
    "torch_unet_db_head_convtranspose.onnx": None,
}
EXPORTERS = {"torch_dynamo": "PyTorch dynamo", "torch_unet": "PyTorch TorchScript", "ch_pp": "paddle2onnx",
             "mediapipe": "tflite2onnx", "efficientnet_lite0": "PyTorch TorchScript", "mobilenetv2": "hwopt example"}


def exporter(name: str) -> str:
    return next((tool for stem, tool in EXPORTERS.items() if name.lower().startswith(stem.lower())), "?")


def downloaded(out: Path) -> dict[str, tuple[Path, str | None]]:
    """PP-OCRv4's detector (rapidocr-onnxruntime 1.4.4) and the trained case's EfficientNet-Lite0."""
    from bench.fidelity_bounds import OCR_DET, OCR_SHAPE, OCR_WHEEL
    from bench.trained_case import wheel_file

    det = wheel_file(*OCR_WHEEL, OCR_DET, out / "real")
    lite0 = out / "trained_case" / "efficientnet_lite0.onnx"
    if not lite0.exists():
        import subprocess
        import sys
        subprocess.run([sys.executable, "-m", "bench.trained_case", "--out", str(lite0.parent)], check=True)
    return {"ch_PP-OCRv4_det_infer": (det, OCR_SHAPE), "efficientnet_lite0 (pretrained)": (lite0, None)}


def _models(out: Path, downloads: bool) -> dict[str, object]:
    from examples.build import build_example

    out.mkdir(parents=True, exist_ok=True)
    models = {"mobilenetv2 (example, 224)": load_model(build_example("mobilenetv2", out))}
    for name, shape in EXPORTS.items():
        proto = load_model(DATA / name)
        if shape:
            apply_input_shapes(proto, [InputShape.parse(shape)])
        models[name.removesuffix(".onnx")] = proto
    for name, (path, shape) in (downloaded(out) if downloads else {}).items():
        proto = load_model(path)
        if shape:
            apply_input_shapes(proto, [InputShape.parse(shape)])
        models[name] = proto
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build"))
    parser.add_argument("--no-downloads", action="store_true", help="only the example and tests/data")
    args = parser.parse_args()
    models = _models(args.out, not args.no_downloads)
    print(f"{'model':<52} {'exporter':<20} {'target':<14} {'latency':>10} {'NPU cycles':>11} {'SRAM KiB':>9} "
          f"{'off-chip KiB':>12} {'CPU ops':>7} {'write s':>7} {'vela s':>6} {'total s':>7}")
    for name, proto in models.items():
        for target_name in TARGETS:
            target = load_target(target_name)
            target = dataclasses.replace(target, backend_settings={**target.backend_settings, "cache": False})
            start = time.perf_counter()
            result = measure_model(proto, target)
            total = time.perf_counter() - start
            m = result.meta
            print(f"{name:<52} {exporter(name):<20} {target_name:<14} {result.latency_us / 1000:>7.3f} ms {m['cycles_npu']:>11.0f} "
                  f"{m['sram_used_bytes'] / 1024:>9.1f} {m['offchip_traffic_bytes'] / 1024:>12.1f} "
                  f"{m['cpu_operators']:>7} {m['write_s']:>7.2f} {m['vela_s']:>6.2f} {total:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
