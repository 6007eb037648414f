"""Interval coverage: does each estimate's 80% band hold the measured latency of real exports it never saw?

    python -m bench.interval_coverage --target npu32 [--estimator DIR] [--real PATH[:NAME=1x3xHxW] ...] [--ocr]
                                      [--remeasure] [--card]

Models: the real exports in ``tests/data`` (torch dynamo, paddle2onnx,
tflite2onnx), ``build/trained_case/efficientnet_lite0.onnx`` when built, and
any ``--real`` file; with ``--ocr`` also PaddleOCR's PP-OCRv4 text detector
(x=1x3x320x320) and its text recogniser with attention in its neck
(x=1x3x48x320), paddle2onnx exports read from the PyPI wheel
``rapidocr-onnxruntime`` 1.4.4 at bench time. None of their kernels was measured into the table. For
each: the estimate with its band (``Estimator.estimate``), the measurement
(``hwopt measure``: npu32 sums every kernel emulated by SCALE-Sim, cached in
``--work``), whether the band covers it, the out-of-distribution kernels and
the kernels that drive the band. Also the FLOPs-proportional baseline's error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decision_accuracy import read_specs, real_models  # noqa: E402

OCR_WHEEL = ("rapidocr-onnxruntime", "1.4.4")
OCR_MODELS = {"ch_PP-OCRv4_det_infer": "x=1x3x320x320", "ch_PP-OCRv4_rec_infer": "x=1x3x48x320"}


def ocr_models(work: Path) -> list[str]:
    """PP-OCRv4 det and rec from the rapidocr wheel (downloaded once into ``work``), as ``--real`` specs."""
    from bench.trained_case import wheel_file

    return [f"{wheel_file(*OCR_WHEEL, f'rapidocr_onnxruntime/models/{stem}.onnx', work / 'real', work / 'wheels')}:{shape}"
            for stem, shape in OCR_MODELS.items()]


def main() -> int:
    from hwopt.backends import model_measurer
    from hwopt.backends.table_file import read_table
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.estimator import load_estimator
    from hwopt.estimator.card import read_card, write_card
    from hwopt.analysis.kernels import schedule
    from hwopt.errors import HwoptError
    from hwopt.io.model import InputShape

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="npu32")
    parser.add_argument("--estimator", type=Path, default=None)
    parser.add_argument("--real-from", action="append", default=[], type=Path, metavar="SPECS",
                        help="a file of --real lines (bench/mediapipe_exports and bench/package_exports write specs.txt)")
    parser.add_argument("--real", action="append", default=[])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "interval_coverage")
    parser.add_argument("--card", action="store_true", help="write the figures into the estimator's card")
    parser.add_argument("--ocr", action="store_true", help="add PP-OCRv4 det and rec (rapidocr wheel, fetched)")
    parser.add_argument("--remeasure", action="store_true",
                        help="time every model again (cpu: host speed moves between sittings)")
    args = parser.parse_args()
    args.real += read_specs(*args.real_from)
    est = load_estimator(args.target, args.estimator)
    target = est.target
    args.work.mkdir(parents=True, exist_ok=True)
    cache_path = args.work / f"measured_{target.name}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() and not args.remeasure else {}
    table = read_table(target.folder / "measurements.csv.gz")
    seen = {m.kernel for m in table}
    flops_per_us = (sum(m.kernel.flops ** 2 for m in table)
                    / sum(m.kernel.flops * m.latency_us for m in table))
    rows = []
    extra = args.real + (ocr_models(args.work) if args.ocr else [])
    for name, path, shapes in real_models(extra):
        _, canonical, _ = load_canonical(path, [InputShape.parse(s) for s in shapes])
        sched = schedule(canonical, target.fusion)
        e = est.estimate(sched, allow_fallback=True)
        # What the truth depends on, hashed stably: onnxruntime times the canonical graph, npu32 sums the kernels.
        content = (canonical.SerializeToString() if target.backend == "onnxruntime"
                   else repr([sk.kernel for sk in sched.kernels]).encode())
        key = f"{name}:{':'.join(shapes)}:{hashlib.sha256(content).hexdigest()[:16]}"
        if key not in cache:
            try:
                cache[key] = float(model_measurer(target)(canonical, target).latency_us)
            except HwoptError as exc:  # the target cannot take it (an op the writer lacks): said, not counted
                print(f"{name:50s} not measured: {exc}", flush=True)
                continue
            cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))
        measured = cache[key]
        flops = sum(sk.kernel.flops for sk in sched.kernels) / flops_per_us
        paid = [sk.kernel for sk in sched.kernels if sk.kernel.kind not in est.free_kinds]
        in_table = sum(k in seen for k in paid)
        covered = e.low_us is not None and e.low_us <= measured <= e.high_us
        drivers = ", ".join(k.description + (" [ood]" if k.ood else "") for k in e.drivers(2))
        rows.append({"model": name, "measured_us": measured, "estimate_us": e.latency_us, "low_us": e.low_us,
                     "high_us": e.high_us, "covered": covered, "ood_kernels": len(e.ood_kernels),
                     "kernels": len(e.per_kernel), "flops_baseline_us": flops, "drivers": drivers,
                     "kernels_in_table": in_table, "paid_kernels": len(paid)})
        band = "no band" if e.low_us is None else f"[{e.low_us / 1000:.3f}, {e.high_us / 1000:.3f}]"
        print(f"{name:50s} measured {measured / 1000:8.3f} ms  estimate {e.latency_us / 1000:8.3f} "
              f"({e.latency_us / measured - 1:+6.1%}) band {band} {'covered' if covered else 'MISSED'}  "
              f"ood {len(e.ood_kernels)}/{len(e.per_kernel)}  flops-baseline {flops / measured - 1:+.0%}  "
              f"drivers: {drivers}", flush=True)
    err = np.array([r["estimate_us"] / r["measured_us"] - 1 for r in rows])
    base = np.array([r["flops_baseline_us"] / r["measured_us"] - 1 for r in rows])
    coverage = float(np.mean([r["covered"] for r in rows]))
    lines = [f"- {len(rows)} real export files (torch, torch dynamo, paddle2onnx, tflite2onnx, tf2onnx; how many of each one's "
             f"kernels happen to be rows of the table is given per model): "
             f"the 80% band covers the measured latency on {sum(r['covered'] for r in rows)} of {len(rows)} "
             f"({100 * coverage:.0f}%); within 10%: {100 * np.mean(np.abs(err) <= 0.10):.0f}% "
             f"(FLOPs baseline {100 * np.mean(np.abs(base) <= 0.10):.0f}%); within 15%: "
             f"{100 * np.mean(np.abs(err) <= 0.15):.0f}% (FLOPs baseline {100 * np.mean(np.abs(base) <= 0.15):.0f}%); "
             f"median |error| "
             f"{100 * np.median(np.abs(err)):.1f}% (FLOPs baseline {100 * np.median(np.abs(base)):.1f}%)"]
    lines += [f"  - {r['model']}: measured {r['measured_us'] / 1000:.3f} ms, estimate {r['estimate_us'] / 1000:.3f} "
              f"({r['estimate_us'] / r['measured_us'] - 1:+.1%}; FLOPs baseline "
              f"{r['flops_baseline_us'] / r['measured_us'] - 1:+.0%}), band "
              + ("none" if r["low_us"] is None else f"{r['low_us'] / 1000:.3f}-{r['high_us'] / 1000:.3f}")
              + f" ({'covers' if r['covered'] else 'misses'}), {r['ood_kernels']} of {r['kernels']} kernels "
              f"out of distribution, {r['kernels_in_table']} of {r['paid_kernels']} in the table" for r in rows]
    print("\n".join(lines))
    if args.card:
        folder = args.estimator or target.folder
        card = read_card(folder)
        card["interval_coverage"] = {"coverage": coverage, "models": rows, "summary_lines": lines,
                                     "command": "python -m bench.interval_coverage " + shlex.join(sys.argv[1:])}
        write_card(folder, card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
