"""hwopt optimize on Ethos-U targets, judged by whole-model Vela: the table of docs/ethos-u.md.

    PYTHONPATH=. python -m bench.vela_optimize -t ethos-u55-256 -t ethos-u85-256 [--model PATH[:NAME=SHAPE] ...]
                                               [--mode default,exact-only,for-retraining] [--work build/vela_opt]
                                               [--calibration calib.npz --heldout heldout.npz]

For each model, target and mode: ``hwopt optimize -t TARGET --json -o OUT`` (the search scores with the
target's estimator and verifies its finalists with whole-model Vela), then ``hwopt measure`` (Vela) of
the original and the written model. Prints one markdown row each: the rules the written model carries
(counted by rule), the estimated change, the Vela-measured change, and the search's note. Default
models: the MobileNetV2 example and three real exports of tests/data. Rows are cached in WORK/rows.json
by (model, target, mode, calibration): a rerun only runs what is missing.

The trained case (``python -m bench.trained_case`` first): ``--model build/trained_case/efficientnet_lite0.onnx
--calibration build/trained_case/calib.npz --heldout build/trained_case/heldout.npz`` runs optimize with the
calibration crops of 12 photos and scores the written model's top-1 agreement with the original on the crops
of 5 OTHER photos (with its Clopper-Pearson 95% interval), beside Vela's figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {"default": [], "exact-only": ["--exact-only"], "for-retraining": ["--for-retraining"]}
DATA = ROOT / "tests" / "data"
DEFAULT_MODELS = ["mobilenetv2", str(DATA / "torch_dynamo_mobilenet_v3_small_w025.onnx"),
                  str(DATA / "ch_ppocr_mobile_v2.0_cls_infer.onnx") + ":x=1x3x48x192",
                  str(DATA / "mediapipe_face_detection_short_range_tflite2onnx.onnx")]


def rules_of(doc: dict) -> str:
    best = doc.get("best") or {}
    counts = collections.Counter(r.split("@")[0].split(":")[0] for r in best.get("rules", []))
    return ", ".join(f"{rule} x{n}" for rule, n in sorted(counts.items())) or "(original)"


def heldout_agreement(original: Path, written: Path, heldout: Path) -> dict:
    """Top-1 agreement of the written model with the original on held-out samples (an .npz of inputs, as
    --calibration takes), with its Clopper-Pearson 95% interval over the samples."""
    import numpy as np
    import onnxruntime as ort

    from bench.fidelity_bounds import interval

    data = np.load(heldout)
    name = next(k for k in data.files if not k.startswith("_") and k != "label")

    def top1(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {feed: data[name][i:i + 16]})[0].argmax(-1)
                               for i in range(0, len(data[name]), 16)])

    same = int((top1(original) == top1(written)).sum())
    low, high = interval(same, len(data[name]))
    return {"agreement": same / len(data[name]), "samples": len(data[name]), "ci95": [low, high]}


def run(model: Path, shapes: list[str], target: str, mode: str, work: Path, calibration: Path | None = None,
        heldout: Path | None = None) -> dict:
    from hwopt.backends.vela import measure_model
    from hwopt.targets import load_target

    out = work / f"{model.stem}.{target}.{mode}.onnx"
    for stale in (out, out.with_name(out.name + ".data")):  # a file of an earlier run is not this run's output
        stale.unlink(missing_ok=True)
    command = [sys.executable, "-m", "hwopt.cli", "optimize", str(model), "-t", target, "-o", str(out), "--json",
               *MODES[mode], *[a for s in shapes for a in ("--input-shape", s)],
               *(["--calibration", str(calibration)] if calibration else [])]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    doc = json.loads(done.stdout)
    t = load_target(target)
    source = model
    if shapes:  # open input dims: the original is measured at the shape optimize was given
        from hwopt.canonical.canonicalize import load_canonical
        from hwopt.io.model import InputShape

        source = load_canonical(model, [InputShape.parse(s) for s in shapes])[1]
    original = measure_model(source, t).latency_us
    written = measure_model(out, t).latency_us if doc.get("output") else original
    best = doc.get("best") or {}
    return {"rules": rules_of(doc), "steps": best.get("rules", []), "estimated_change": best.get("latency_change"), "original_us": original,
            "written_us": written, "measured_change": written / original - 1, "note": best.get("note") or "",
            "seconds": round(seconds), "exit": done.returncode, "cost_model": doc.get("cost_model"),
            "claim": (doc.get("fidelity") or {}).get("claim"),
            "heldout": heldout_agreement(model, out, heldout) if heldout and doc.get("output") and mode != "for-retraining"
            else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--target", action="append", required=True)
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--mode", default=",".join(MODES))
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "vela_opt")
    parser.add_argument("--calibration", type=Path, help="passed to optimize (samples of the model's own data)")
    parser.add_argument("--heldout", type=Path, help="an .npz of inputs the run never saw: the written model's "
                        "top-1 agreement with the original on them")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cache_path = args.work / "rows.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for spec in args.model or DEFAULT_MODELS:
        path, _, shape = spec.partition(":")
        if not path.endswith(".onnx"):
            from examples.build import build_example

            path = str(build_example(path, args.work / "examples"))
        for target in args.target:
            for mode in args.mode.split(","):
                key = f"{Path(path).name}|{target}|{mode}" + (f"|{args.calibration.name}" if args.calibration else "")
                if key not in cache:
                    cache[key] = run(Path(path), [shape] if shape else [], target, mode, args.work,
                                     args.calibration, args.heldout)
                    cache_path.write_text(json.dumps(cache, indent=1))
                r = cache[key]
                if "error" in r:
                    print(f"| {Path(path).stem} | {target} | {mode} | error: {r['error']} |", flush=True)
                    continue
                est = f"{100 * r['estimated_change']:+.1f}%" if r["estimated_change"] is not None else "-"
                print(f"| {Path(path).stem} | {target} | {mode} | {r['rules']} | {est} | "
                      f"{r['original_us'] / 1000:.3f} | {r['written_us'] / 1000:.3f} | {100 * r['measured_change']:+.1f}% "
                      f"| {r['seconds']} s | {r['note'][:160]} |", flush=True)
                if r.get("heldout"):
                    h = r["heldout"]
                    print(f"|   | held-out photos: top-1 agreement {h['agreement']:.1%} of {h['samples']} "
                          f"(95% CI {h['ci95'][0]:.1%}-{h['ci95'][1]:.1%}); claim: {r.get('claim')} |", flush=True)


if __name__ == "__main__":
    main()
