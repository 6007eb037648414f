"""Issue 23's acceptance figures: a fidelity claim you can trust, and nothing inexact for noise.

    python -m bench.fidelity_bounds [--work build/fidelity_bounds] [--cases trained,ocr-npu32,ocr-cpu,cls]
                                    [--trained build/trained_case]

Every case runs ``hwopt optimize`` as a user would (the CLI, default budgets, ``--json``) and then checks
what was written on data the run never saw:

- ``trained``: the trained case (``python -m bench.trained_case`` first: a pretrained EfficientNet-Lite0,
  photos from PyPI wheels split by photo). Calibration crops of 12 photos (``calib.npz``), judged afterwards
  on crops of 5 OTHER photos (``heldout.npz``): (a) with its ``_group`` array (held out by photo), (b) the
  same crops without ``_group`` (the issue's setting: every crop counted as independent, a warning), (c) (b)
  with ``--min-fidelity 0.9``, a budget 64 crops can prove: an inexact variant may be admitted on its bound,
  and the other photos then say whether the bound held. Each row: what was written, the claim (point and
  95% lower bound, units), and the written model's top-1 agreement on the other photos' 256 crops, with
  its Clopper-Pearson interval over the crops and over the 5 photos.
- ``ocr-npu32`` / ``ocr-cpu``: PP-OCRv4's text detector (``rapidocr-onnxruntime`` 1.4.4 from PyPI,
  ``bench.trained_case.wheel_file``), 1x3x320x320, without calibration and with the trained case's 18
  photos as a folder (``--holdout 0.6``: 11 photos held out, enough units for the bootstrap). Each row: the
  inexact decisions dropped for noise, the pick, and on cpu the paired A/B of the written model against the
  original (``hwopt.backends.ort_paired``), measured again after the run.
- ``cls``: PP-OCR's 2-class direction classifier (tests/data): the metric ``auto`` chooses and why.

Prints a table per case and writes ``WORK/results.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OCR_WHEEL = ("rapidocr-onnxruntime", "1.4.4")
OCR_DET = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
OCR_SHAPE = "x=1x3x320x320"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def optimize(model: Path, out: Path, *args: str) -> tuple[dict, str, float]:
    """``hwopt optimize MODEL -o OUT --json ARGS``: (the JSON document, stderr, seconds)."""
    command = [sys.executable, "-m", "hwopt.cli", "optimize", str(model), "-o", str(out), "--json", *args]
    log("hwopt " + " ".join(command[3:]))
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"optimize failed ({done.returncode}): {done.stderr[-2000:]}")
    out.with_suffix(".json").write_text(done.stdout)  # the whole report, beside the model
    return json.loads(done.stdout), done.stderr, seconds


def top1(path: Path, crops: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: crops[i:i + 1]})[0] for i in range(len(crops))]).argmax(1)


def interval(successes: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def summary(doc: dict) -> dict:
    best, fid = doc.get("best") or {}, doc["fidelity"]
    return {"status": doc["status"], "written": doc["output"], "exact": best.get("exact"),
            "latency_change": best.get("latency_change"), "rules": best.get("rules", []),
            "point": fid.get("point"), "lower_bound": fid.get("lower_bound"),
            "independent_samples": fid.get("independent_samples"), "claim": fid.get("claim"),
            "unprovable": fid.get("unprovable"), "independence_warning": fid.get("independence_warning"),
            "metric": fid.get("metric"), "metric_reason": fid.get("metric_reason"), "gain": doc.get("gain"),
            "nothing_to_do": doc.get("nothing_to_do"), "sensitivity": len(doc.get("sensitivity", [])),
            "seconds": doc["seconds"].get("total")}


def trained(work: Path, case: Path, only: set[int] | None = None) -> list[dict]:
    model = case / "efficientnet_lite0.onnx"
    if not model.is_file():
        raise SystemExit(f"{model}: run python -m bench.trained_case first")
    with np.load(case / "calib.npz") as archive:
        calib = {k: archive[k] for k in archive.files}
    with np.load(case / "heldout.npz") as archive:
        crops, photos = archive["input"], archive["_group"]
    nogroup = work / "calib_nogroup.npz"
    np.savez(nogroup, input=calib["input"])
    reference = top1(model, crops)
    rows = []
    runs = (("with _group", case / "calib.npz", []), ("without _group", nogroup, []),
            ("without _group, --min-fidelity 0.9", nogroup, ["--min-fidelity", "0.9"]))
    for index, (name, data, extra) in enumerate(runs):
        if only is not None and index not in only:
            continue
        out = work / f"trained_{index}.onnx"
        out.unlink(missing_ok=True)
        doc, stderr, seconds = optimize(model, out, "--calibration", str(data), "--no-compare", *extra)
        row = {"case": name, **summary(doc), "stderr_notes": [l for l in stderr.splitlines() if "hwopt:" in l]}
        written = out if doc["output"] else model
        agree = top1(written, crops) == reference
        per_photo = [bool(agree[photos == p].all()) for p in np.unique(photos)]
        row["other_photos"] = {"crops": int(len(agree)), "agreement": float(agree.mean()),
                               "interval_crops": interval(int(agree.sum()), len(agree)),
                               "photos": len(per_photo), "photos_all_agree": int(sum(per_photo)),
                               "interval_photos": interval(int(sum(per_photo)), len(per_photo))}
        lb = row["lower_bound"] if not row["exact"] else None
        row["bound_contradicted"] = bool(lb is not None and row["other_photos"]["interval_crops"][1] < lb)
        rows.append(row)
        log(f"trained {name}: {'exact' if row['exact'] else 'INEXACT'} {row['latency_change']:+.1%}, claim "
            f"{row['claim']}; other photos: {row['other_photos']['agreement']:.1%} of {len(agree)} crops "
            f"(95% CI {row['other_photos']['interval_crops'][0]:.1%}-{row['other_photos']['interval_crops'][1]:.1%})")
    return rows


def ocr_model(work: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from bench.trained_case import wheel_file

    return wheel_file(*OCR_WHEEL, OCR_DET, work / "real", work / "wheels")


def photo_folder(work: Path, case: Path) -> Path:
    folder = work / "photos_all"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for side in ("calib", "heldout"):
            for photo in sorted((case / "photos" / side).iterdir()):
                shutil.copy(photo, folder / photo.name)
    return folder


def ocr(work: Path, case: Path, target: str) -> list[dict]:
    import onnx

    from hwopt.backends.ort_cpu import TimingSettings
    from hwopt.backends.ort_paired import paired_change
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.io.model import parse_input_shapes
    from hwopt.targets import load_target

    model = ocr_model(work)
    rows = []
    for name, extra in (("no calibration", []),
                        ("photos, --holdout 0.6", ["--calibration", str(photo_folder(work, case)),
                                                   "--preprocess", "imagenet", "--holdout", "0.6"])):
        out = work / f"ocr_{target}_{len(rows)}.onnx"
        out.unlink(missing_ok=True)
        doc, stderr, seconds = optimize(model, out, "-t", target, "--input-shape", OCR_SHAPE, "--no-compare", *extra)
        row = {"case": f"{target}, {name}", **summary(doc),
               "stderr_notes": [l for l in stderr.splitlines() if "hwopt:" in l]}
        if target == "cpu" and doc["output"]:
            # After the run, on its own: the written model against the original, paired and interleaved.
            _, canonical, _ = load_canonical(model, parse_input_shapes([OCR_SHAPE]))
            change = paired_change(canonical, onnx.load(str(out)), TimingSettings.from_target(load_target("cpu")))
            row["paired_after"] = change.to_dict()
        rows.append(row)
        log(f"ocr {row['case']}: written {row['written']}, {'exact' if row['exact'] else 'inexact'} "
            f"{(row['latency_change'] or 0):+.2%}, dropped {len((row['gain'] or {}).get('dropped', []))}, "
            f"paired {(row['gain'] or {}).get('paired')}, verdict {(row['gain'] or {}).get('verdict')}")
    return rows


def cls() -> list[dict]:
    import onnxruntime as ort

    from hwopt.fidelity.metrics import choose_metric, metric_reason

    session = ort.InferenceSession(str(ROOT / "tests" / "data" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, 48, 192), np.float32)
    names = [o.name for o in session.get_outputs()]
    shapes = dict(zip(names, (v.shape for v in session.run(names, {session.get_inputs()[0].name: x}))))
    row = {"case": "PP-OCR direction classifier", "shapes": {k: list(v) for k, v in shapes.items()},
           "metric": choose_metric(shapes).name, "metric_reason": metric_reason(shapes)}
    log(f"cls: {row}")
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "fidelity_bounds")
    parser.add_argument("--trained", type=Path, default=ROOT / "build" / "trained_case")
    parser.add_argument("--cases", default="cls,trained,ocr-npu32,ocr-cpu")
    parser.add_argument("--trained-runs", default=None, help="which trained runs (0,1,2; default all)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for case in args.cases.split(","):
        if case == "cls":
            results[case] = cls()
        elif case == "trained":
            only = {int(i) for i in args.trained_runs.split(",")} if args.trained_runs else None
            key = case + (f"[{args.trained_runs}]" if args.trained_runs else "")
            results[key] = trained(args.work, args.trained, only)
        elif case in ("ocr-npu32", "ocr-cpu"):
            results[case] = ocr(args.work, args.trained, case.split("-")[1])
        else:
            raise SystemExit(f"unknown case {case!r}")
        results_path.write_text(json.dumps(results, indent=1))
    log(f"wrote {results_path}")


if __name__ == "__main__":
    main()
