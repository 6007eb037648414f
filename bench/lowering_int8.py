"""Are the lowerings (``prelu-to-dwconv``, ``pad-to-conv``, ``affine-to-dwconv``) as faithful in int8 as the original, on real photos?

    PYTHONPATH=. python -m bench.lowering_int8 [--model build/mediapipe/iris_landmark.onnx ...] [-t ethos-u55-256]
                                               [--calibration build/trained_case/photos/calib]
                                               [--heldout build/trained_case/photos/heldout]
                                               [--preprocess 0-1] [--mirror] [--work build/int8_lowering]

For each model: ``hwopt optimize MODEL -t TARGET --calibration CALIB --preprocess 0-1`` (the Python API),
kept only when its report shows a lowering taken (``gain.lowering``). The original and the written model
are then written as int8 TFLite by hwopt's writer, both calibrated on the same photos (CALIB, read by
``hwopt.calibration.images`` as ``--preprocess`` reads them: resized to cover the input, centre-cropped),
and run by LiteRT (``hwopt.tflite.litert``) on the photos of HELDOUT, beside onnxruntime's fp32 run of the
original. Prints one markdown row per model and output: relative L2 over the held-out photos together and
the mean per-photo cosine of int8-original vs fp32, int8-lowered vs fp32 and int8-lowered vs int8-original,
the ratio of the two errors against fp32, and Vela's latency of the two int8 files on TARGET (the very
files compared, compiled whole). ``--mirror`` adds each held-out photo mirrored left-right (twice the
inputs, for a steadier ratio). Default models: the five MediaPipe exports with a lowering site. Outputs
(the written models, their optimize reports, the int8 files) go under ``--work``.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHOTOS = ROOT / "build" / "trained_case" / "photos"
MEDIAPIPE = ROOT / "build" / "mediapipe"
DEFAULT_MODELS = [MEDIAPIPE / f"{name}.onnx" for name in ("face_detection_short_range", "hand_recrop",
                                                          "face_landmark", "iris_landmark", "palm_detection_lite")]


def compare(reference: dict, candidate: dict) -> dict[str, tuple[float, float]]:
    """Per output: (relative L2 over all samples stacked, mean per-sample cosine)."""
    from hwopt.fidelity.metrics import _cosine, rel_l2

    return {name: (rel_l2(ref, candidate[name]), float(_cosine(ref, candidate[name]).mean()))
            for name, ref in reference.items()}


def run_all(run, samples: dict) -> dict:
    """``run(feeds) -> outputs`` on each sample, outputs stacked along the batch axis."""
    import numpy as np

    count = len(next(iter(samples.values())))
    runs = [run({name: array[i:i + 1] for name, array in samples.items()}) for i in range(count)]
    return {name: np.concatenate([r[name] for r in runs]) for name in runs[0]}


def mirrored(samples: dict) -> dict:
    """The samples followed by their left-right mirror images (W is the last axis of NCHW, -2 of NHWC)."""
    import numpy as np

    return {name: np.concatenate([x, np.flip(x, -2 if x.shape[-1] == 3 else -1)]) for name, x in samples.items()}


def written_rules(doc: dict) -> str:
    """The lowerings taken (with their site counts), then any other rule of the written model."""
    lowering = (doc.get("gain") or {}).get("lowering") or {}
    taken = {t["rule"]: t["sites"] for t in lowering.get("tried", []) if t["taken"]}
    others = collections.Counter(r.split("@")[0].split(":")[0] for r in (doc.get("best") or {}).get("rules", []))
    return ", ".join([f"{rule} x{n}" for rule, n in taken.items()]
                     + [f"{rule} x{n}" for rule, n in sorted(others.items()) if rule not in taken])


def main() -> int:
    import onnxruntime as ort

    import hwopt
    from hwopt.backends.vela import VelaSettings, compile_tflite
    from hwopt.calibration.images import load_calibration_folder
    from hwopt.io.model import load_model
    from hwopt.targets import load_target
    from hwopt.tflite.litert import run_tflite
    from hwopt.tflite.writer import write_tflite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=Path, default=None)
    parser.add_argument("-t", "--target", default="ethos-u55-256")
    parser.add_argument("--calibration", type=Path, default=PHOTOS / "calib")
    parser.add_argument("--heldout", type=Path, default=PHOTOS / "heldout")
    parser.add_argument("--preprocess", default="0-1")
    parser.add_argument("--mirror", action="store_true", help="also each held-out photo mirrored left-right")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "int8_lowering")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    settings = VelaSettings.from_target(load_target(args.target))

    print(f"calibration {args.calibration} ({args.preprocess}), held out {args.heldout}"
          f"{' and mirrored' if args.mirror else ''}, Vela on {args.target}\n")
    print("| model | lowerings written | output | int8 original vs fp32: rel-L2 (cos) | int8 lowered vs fp32: "
          "rel-L2 (cos) | ratio | int8 lowered vs int8 original: rel-L2 (cos) | Vela ms original -> lowered |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.model or DEFAULT_MODELS:
        stem = path.stem
        written = args.work / f"{stem}.lowered.onnx"
        result = hwopt.optimize(path, target=args.target, calibration=args.calibration,
                                preprocess=args.preprocess, seed=0, output=written,
                                report=args.work / f"{stem}.optimize.json")
        lowering = (result["gain"] or {}).get("lowering") or {}
        if not lowering.get("taken") or result.output is None:
            print(f"| {stem} | none taken: {lowering.get('why', result.nothing_to_do)} | | | | | | |")
            continue
        original, lowered = load_model(path), load_model(written)
        calib, _ = load_calibration_folder(args.calibration, original, args.preprocess)
        held, _ = load_calibration_folder(args.heldout, original, args.preprocess)
        held = mirrored(held) if args.mirror else held
        session = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        fp32 = run_all(lambda feeds: dict(zip(names, session.run(names, feeds))), held)
        int8, latency = {}, {}
        for label, model in (("original", original), ("lowered", lowered)):
            tflite = args.work / f"{stem}.{label}.tflite"
            wrote = write_tflite(model, tflite, samples=calib)
            int8[label] = run_all(lambda feeds: run_tflite(tflite, wrote, feeds), held)
            latency[label] = compile_tflite(tflite, settings).latency_us / 1000
        base, low, cross = (compare(fp32, int8["original"]), compare(fp32, int8["lowered"]),
                            compare(int8["original"], int8["lowered"]))
        for i, name in enumerate(names):
            ratio = low[name][0] / base[name][0] if base[name][0] else float("inf")
            print(f"| {stem if i == 0 else ''} | {written_rules(result.doc) if i == 0 else ''} | {name} | "
                  f"{base[name][0]:.4f} ({base[name][1]:.5f}) | {low[name][0]:.4f} ({low[name][1]:.5f}) | "
                  f"{ratio:.2f}x | {cross[name][0]:.4f} ({cross[name][1]:.5f}) | "
                  + (f"{latency['original']:.3f} -> {latency['lowered']:.3f}" if i == 0 else "") + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
