"""Estimator accuracy on model families it never saw: prints the figures and writes them into the card.

    python -m bench.estimator_accuracy --target npu32 [--target cpu] [--no-card]

Method (per target):

1. Hold out whole example families (default: efficientnet_lite0 and
   mobilenetv3_small). Training rows = rows of the target's measurements
   table whose sweep origin (``hwopt.estimator.profile.sweep(..., origins=)``) includes a
   training family, minus every kernel that occurs in a held-out model or
   variant (strict: the held-out estimator has never seen one of their kernels).
2. Train an estimator on those rows only (``hwopt.estimator.train``).
3. Held-out models: the held-out families plus rewritten variants of one of
   them (built with the apply pipeline: fuse-ibn with linear init, dw-to-dense,
   align-channels pad to 32, single sites and a few combinations).
4. Ground truth = ``hwopt measure``: npu32 sums every kernel emulated by the
   ScaleSim backend; cpu times the whole model (canonical form) with
   onnxruntime (each model is timed once, results cached in the workdir).
5. Figures: share of held-out models within +-5% / +-10% of measured,
   Kendall tau over the variants, the same for a FLOPs-proportional baseline
   (latency = c x FLOPs, c least-squares fitted on the same training rows),
   and the off-chip traffic head's median relative error on held-out kernels.

The cpu estimate is the kernel sum under the in-model term
(``hwopt.estimator.in_model``: a scale, and the layout conversions predicted by
``hwopt.analysis.layout`` at costs fitted on their profiled times), fitted on whole
models of the training families (and rewritten variants of MobileNetV2)
measured end to end; the held-out figures without the conversions and of the
kernel sum alone are reported beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnx
from scipy.stats import kendalltau

from examples.build import build_example
from hwopt.backends.table_file import read_table
from hwopt.estimator import load_estimator
from hwopt.estimator.card import read_card, write_card
from hwopt.backends.ort_layout import parse_nodes
from hwopt.estimator.train import EndToEnd, train_estimator, usable
from hwopt.analysis.kernels import schedule
from hwopt.estimator.profile import example_names, sweep
from hwopt.targets import load_target

from bench.small_models import small_models

HOLDOUT = ("efficientnet_lite0", "mobilenetv3_small")
VARIANTS_OF = "mobilenetv3_small"
# Rewrites of the variant model: every fusable block, every depthwise conv, channel groups padded to 32.
FUSE = [f"fuse-ibn:init=linear@ibn{i}" for i in range(1, 11)]
DENSE = [f"dw-to-dense@dw{i}" for i in range(0, 11)]
COMBOS = ["fuse-ibn:init=linear@ibn1,ibn2", "fuse-ibn:init=linear@ibn1,ibn2,ibn3", "dw-to-dense@dw0,dw1,dw2",
          "fuse-ibn:init=linear@ibn4,ibn5", "dw-to-dense@dw4,dw5,dw6,dw7", "align-channels:p=32,mode=pad",
          "fuse-ibn:init=linear@ibn6,ibn7", "fuse-ibn:init=linear@ibn8,ibn9,ibn10", "dw-to-dense@dw8,dw9,dw10",
          "align-channels:p=32,mode=pad@ch:features_features.2_block_block.0_block.0.0_Conv",
          "align-channels:p=32,mode=pad@ch:features_features.3_block_block.0_block.0.0_Conv",
          "align-channels:p=32,mode=pad@ch:features_features.7_block_block.0_block.0.0_Conv",
          "align-channels:p=32,mode=pad@ch:features_features.8_block_block.0_block.0.0_Conv"]
# cpu: whole models of the training families measured end to end, for the in-model term
# (hwopt.estimator.in_model): the four families and rewritten variants of one of them.
IN_MODEL_FAMILIES = ("mobilenetv2", "resnet18", "segmentation", "ssdlite_mobilenetv2")
IN_MODEL_VARIANTS_OF = "mobilenetv2"


def _variant_rules(name: str) -> list[str]:
    """Rewrites of a model: every fusable block, every depthwise conv, combinations (unknown sites skip)."""
    if name == VARIANTS_OF:
        return FUSE + DENSE + COMBOS
    return ([f"fuse-ibn:init=linear@ibn{i}" for i in range(1, 17, 2)] + [f"dw-to-dense@dw{i}" for i in range(0, 17, 3)]
            + ["fuse-ibn:init=linear@ibn1,ibn2,ibn3", "align-channels:p=32,mode=pad"])


def build_models(work: Path, variants_of: tuple[str, ...] = (VARIANTS_OF,)) -> dict[str, Path]:
    """Example models and the variants of ``variants_of`` (built once, cached in the workdir)."""
    from hwopt.rewrites.apply import apply_steps
    from hwopt.calibration.samples import random_inputs
    from hwopt.canonical.canonicalize import canonicalize
    from hwopt.errors import HwoptError
    from hwopt.io.model import load_model
    from hwopt.rewrites.ruleset import parse_rule_option

    models = {name: build_example(name, work / "examples") for name in example_names()}
    models.update(small_models(work / "small"))
    for name in variants_of:
        base = load_model(models[name])
        canonical, _ = canonicalize(base, verify=False)
        calib, evaluation = random_inputs(base, 8, 0), random_inputs(base, 2, 1)
        for rule in _variant_rules(name):
            label = f"{name}+{rule}"
            path = work / "variants" / (label.replace("@", "_at_").replace(":", "_").replace(",", "-") + ".onnx")
            if not path.exists():
                try:
                    result = apply_steps(base, canonical, [parse_rule_option(r) for r in rule.split(";")], calib,
                                         evaluation)
                except HwoptError as exc:
                    print(f"  skipped variant {rule}: {exc}")
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                onnx.save(result.model, str(path))
            models[label] = path
    return models


LAYOUT_COLUMNS = ("reorders", "reorder_bytes", "reorder_us", "reorder_nodes")


_TRUTH_KEYS: dict[tuple[str, str, str], str] = {}


def truth_key(label: str, path: Path, target) -> str:
    """What a model's ground truth depends on, hashed: the canonical graph onnxruntime times, or the schedule
    whose kernels npu32 sums. A change to canonicalisation or scheduling then re-measures the model."""
    cached = _TRUTH_KEYS.get((label, str(path), target.name))
    if cached is not None:
        return cached
    from hwopt.canonical.canonicalize import canonicalize
    from hwopt.io.model import load_model

    canonical = canonicalize(load_model(path), verify=False)[0]
    if target.backend == "onnxruntime":
        content = canonical.SerializeToString()
    else:
        content = repr([sk.kernel for sk in schedule(canonical, target.fusion).kernels]).encode()
    key = _TRUTH_KEYS[(label, str(path), target.name)] = f"{label}:{hashlib.sha256(content).hexdigest()[:16]}"
    return key


def measured_meta(work: Path, target, label: str, path: Path) -> dict:
    """Ground truth: latency_us and, on cpu, the layout conversions measured in the model (cached per target
    and ``truth_key``)."""
    from hwopt.backends import model_measurer

    cache = work / f"measured_{target.name}.json"
    data = json.loads(cache.read_text()) if cache.exists() else {}
    key = truth_key(label, path, target)
    if not isinstance(data.get(key), dict) or (target.fusion.blocked_layout and "reorder_nodes" not in data[key]):
        # older caches held the latency alone (or the conversions' totals alone)
        result = model_measurer(target)(path, target)
        meta = getattr(result, "meta", {}) or {}
        data[key] = {"latency_us": float(result.latency_us), **{c: meta[c] for c in LAYOUT_COLUMNS if c in meta}}
        cache.write_text(json.dumps(data, indent=1, sort_keys=True))
    return data[key]


def measured(work: Path, target, label: str, path: Path) -> float:
    return measured_meta(work, target, label, path)["latency_us"]


def schedule_of(path: Path, target):
    from hwopt.canonical.canonicalize import canonicalize
    from hwopt.io.model import load_model

    return schedule(canonicalize(load_model(path), verify=False)[0], target.fusion)


def share_within(pred: np.ndarray, true: np.ndarray, tol: float) -> float:
    return float(np.mean(np.abs(pred / true - 1) <= tol))


def write_end_to_end(work: Path, target, models: dict[str, Path], labels: list[str]) -> Path:
    """Every measured model as ``hwopt train --end-to-end`` reads it (paths relative to the CSV)."""
    path = work / f"end_to_end_{target.name}.csv"
    lines = ["model,latency_us," + ",".join(LAYOUT_COLUMNS)]
    for m in labels:
        meta = measured_meta(work, target, m, models[m])
        lines.append(f"{models[m].relative_to(work)},{meta['latency_us']:.3f},"
                     + ",".join(str(meta.get(c, "")) for c in LAYOUT_COLUMNS))
    path.write_text("\n".join(lines) + "\n")
    return path


def family(label: str) -> str:
    """A model label's family: ``mobilenetv2+dw-to-dense@dw1`` and ``mobilenetv2~w0.5_128`` are mobilenetv2."""
    return label.split("+")[0].split("~")[0]


def evaluate(target_name: str, work: Path, holdout: tuple[str, ...], write: bool, measure_only: bool = False) -> dict:
    target = load_target(target_name)
    table_path = target.folder / "measurements.csv.gz"
    cpu = target.backend == "onnxruntime"
    models = build_models(work, (VARIANTS_OF, IN_MODEL_VARIANTS_OF) if cpu else (VARIANTS_OF,))
    if not cpu:  # the small models are for the cpu in-model term
        models = {k: v for k, v in models.items() if "~" not in k}
    in_model_labels = [m for m in models if cpu and family(m) in IN_MODEL_FAMILIES]
    heldout_labels = [m for m in models if family(m) in holdout]
    if measure_only:  # one sitting: every model timed now (cached in the workdir), nothing trained
        start = time.perf_counter()
        for m in in_model_labels + heldout_labels:
            measured_meta(work, target, m, models[m])
        print(f"[{target.name}] {len(in_model_labels) + len(heldout_labels)} models measured end to end in "
              f"{time.perf_counter() - start:.0f} s")
        return {}
    rows = usable(read_table(table_path))
    variant_labels = [m for m in models if m.startswith(VARIANTS_OF + "+")]
    scheds = {label: schedule_of(models[label], target) for label in models}
    heldout_kernels = {sk.kernel for m in heldout_labels for sk in scheds[m].kernels}
    origins: dict = {}
    sweep(target.parallelism, origins=origins)
    train_fams = set(example_names()) - set(holdout) | {"attention"}  # the sweep's transformer family too
    train_rows = [r for r in rows if r.kernel not in heldout_kernels
                  and (r.kernel not in origins or origins[r.kernel] & train_fams)]
    print(f"[{target.name}] table {len(rows)} rows; held-out training set {len(train_rows)} rows "
          f"(families {', '.join(sorted(train_fams))}); {len(heldout_labels)} held-out models")
    folder = work / f"heldout_{target.name}"
    end_to_end = []
    for m in in_model_labels:
        meta = measured_meta(work, target, m, models[m])
        end_to_end.append(EndToEnd(m, scheds[m], meta["latency_us"], int(meta.get("reorders", 0)),
                                   int(meta.get("reorder_bytes", 0)), float(meta.get("reorder_us", "nan")),
                                   tuple(parse_nodes(meta.get("reorder_nodes", "")))))
    start = time.perf_counter()
    card = train_estimator(train_rows, target, folder, source=f"{table_path} minus held-out families",
                           end_to_end=end_to_end)
    print(f"  trained in {time.perf_counter() - start:.0f} s")
    est = load_estimator(target, folder, allow_fallback=False)
    # Least squares of latency = c x FLOPs over the same training rows (c in us per FLOP, kept as FLOPs/us).
    flops = np.array([r.kernel.flops for r in train_rows], dtype=float)
    lat = np.array([r.latency_us for r in train_rows])
    flops_per_us = float((flops ** 2).sum() / (flops * lat).sum())

    truth, pred, base, ksum = {}, {}, {}, {}
    for label in heldout_labels:
        sched = scheds[label]
        pred[label] = est.estimate(sched).latency_us
        ksum[label] = float(est.predict([sk.kernel for sk in sched.kernels], isolated=True).sum())
        base[label] = sum(sk.kernel.flops for sk in sched.kernels) / flops_per_us
        truth[label] = measured(work, target, label, models[label])
        print(f"  {label:60s} measured {truth[label]:10.1f} us"
              f"  predicted {pred[label]:10.1f} ({100 * (pred[label] / truth[label] - 1):+.1f}%)"
              f"  kernel sum {100 * (ksum[label] / truth[label] - 1):+.1f}%"
              f"  flops-baseline {base[label]:10.1f} ({100 * (base[label] / truth[label] - 1):+.1f}%)")
    labels = heldout_labels
    t = np.array([truth[m] for m in labels])
    p = np.array([pred[m] for m in labels])
    b = np.array([base[m] for m in labels])
    vt = np.array([truth[m] for m in variant_labels])
    tau = float(kendalltau([pred[m] for m in variant_labels], vt)[0])
    tau_base = float(kendalltau([base[m] for m in variant_labels], vt)[0])
    figures = {
        "holdout_families": list(holdout), "training_rows": len(train_rows), "heldout_models": len(labels),
        "variants_of": VARIANTS_OF, "variants": len(variant_labels),
        "small": sum("~" in m for m in labels),
        "ground_truth": ("sum of every kernel emulated by SCALE-Sim + vector-unit model (hwopt measure)"
                         if target.backend == "scalesim" else
                         "whole model (canonical form) timed end to end with onnxruntime (hwopt measure)"),
        "within_5pct": share_within(p, t, 0.05), "within_10pct": share_within(p, t, 0.10),
        "median_abs_error_pct": float(np.median(np.abs(p / t - 1)) * 100),
        "kendall_tau_variants": tau,
        "baseline_flops": {"within_5pct": share_within(b, t, 0.05), "within_10pct": share_within(b, t, 0.10),
                           "median_abs_error_pct": float(np.median(np.abs(b / t - 1)) * 100),
                           "kendall_tau_variants": tau_base, "flops_per_us": flops_per_us},
        "per_model": {m: {"measured_us": truth[m], "predicted_us": pred[m], "flops_baseline_us": base[m]}
                      for m in labels},
    }
    if cpu:
        from hwopt.estimator.in_model import fit_in_model_term

        ks = np.array([ksum[m] for m in labels])
        fitted_on = card["in_model"]["fitted_on"]
        # Ablation: the same term without layout conversions (scale and per-kernel cost refitted alone).
        bare = fit_in_model_term([r["kernel_sum_us"] for r in fitted_on], [r["kernels"] for r in fitted_on],
                                 [r["measured_us"] for r in fitted_on])
        counts = np.array([sum(1 for sk in scheds[m].kernels if sk.kernel.kind not in est.free_kinds)
                           for m in labels])
        nc = np.array([bare.apply(s_, n) for s_, n in zip(ks, counts)])
        figures["in_model_term"] = {
            **{k: v for k, v in card["in_model"].items() if k != "fitted_on"},
            "kernel_sum_only": {"within_5pct": share_within(ks, t, 0.05), "within_10pct": share_within(ks, t, 0.10),
                                "median_abs_error_pct": float(np.median(np.abs(ks / t - 1)) * 100)},
            "without_conversions": {"scale": bare.scale, "within_5pct": share_within(nc, t, 0.05),
                                    "within_10pct": share_within(nc, t, 0.10),
                                    "median_abs_error_pct": float(np.median(np.abs(nc / t - 1)) * 100)}}
    if est.dram is not None:
        # Memory head: per-kernel off-chip bytes on the held-out kernels (measured by the backend).
        from hwopt.backends import get_backend

        kernels = sorted({k for k in heldout_kernels if k.kind not in est.free_kinds}, key=repr)
        ms = get_backend(target).measure(kernels)
        true_d = np.array([m.dram_bytes for m in ms], dtype=float)
        keep = true_d > 0
        pred_d = est.predict_dram([k for k, ok in zip(kernels, keep) if ok])
        figures["dram_head"] = {"heldout_kernels": int(keep.sum()),
                                "median_rel_error_pct": float(np.median(np.abs(pred_d / true_d[keep] - 1)) * 100)}
        lat_true = np.array([m.latency_us for m in ms])
        lat_pred = est.predict(kernels)
        figures["heldout_kernels_latency_median_rel_error_pct"] = float(
            np.median(np.abs(lat_pred / lat_true - 1)) * 100)
    if cpu:
        written = write_end_to_end(work, target, models, in_model_labels + heldout_labels)
        print(f"  every measured model for the shipped estimator's in-model term: {written}\n"
              f"  (hwopt train {table_path} -o {target.folder} -t {target.name} --end-to-end {written})")
    lines = summary_lines(target.name, figures)
    print("\n".join(lines))
    if write:
        card = read_card(target.folder)
        card["accuracy"] = {**figures, "summary_lines": lines, "measured_on": time.strftime("%Y-%m-%d")}
        write_card(target.folder, card)
    return figures


def summary_lines(name: str, f: dict) -> list[str]:
    b = f["baseline_flops"]
    lines = [
        f"- held out: {', '.join(f['holdout_families'])} (whole families; {f['training_rows']} training rows "
        f"without any of their kernels); {f['heldout_models']} held-out models = the 2 families + "
        f"{f['variants']} rewritten variants of {f['variants_of']}"
        + (f" + {f['small']} smaller versions of them (bench/small_models.py)" if f.get("small") else ""),
        f"- ground truth: {f['ground_truth']}",
        "- figures of an estimator trained the same way without the held-out families; the shipped one is "
        "trained on every row of the table",
        "",
        "| figure | estimator | FLOPs-proportional baseline |",
        "|---|---|---|",
        f"| held-out models within +-5% | {100 * f['within_5pct']:.0f}% | {100 * b['within_5pct']:.0f}% |",
        f"| held-out models within +-10% | {100 * f['within_10pct']:.0f}% | {100 * b['within_10pct']:.0f}% |",
        f"| median abs error | {f['median_abs_error_pct']:.1f}% | {b['median_abs_error_pct']:.1f}% |",
        f"| Kendall tau, {f['variants']} variants of {f['variants_of']} | {f['kendall_tau_variants']:.3f} | "
        f"{b['kendall_tau_variants']:.3f} |",
        "",
    ]
    if "dram_head" in f:
        lines.append(f"- off-chip traffic head: median relative error {f['dram_head']['median_rel_error_pct']:.1f}% "
                     f"on {f['dram_head']['heldout_kernels']} held-out kernels")
    if "in_model_term" in f:
        c = f["in_model_term"]
        k = c["kernel_sum_only"]
        w = c["without_conversions"]
        lines.append(f"- cpu estimate = in-model term over the kernel sum (hwopt/estimator/in_model.py): latency = "
                     f"{c['scale']:.3f} x kernel sum {c['per_kernel_us']:+.2f} us per kernel"
                     + (f" (each kernel at least {c['floor_share']:.2f} x its scaled time)"
                        if c.get("floor_share") else "")
                     + f" + layout conversions ({c.get('reorder_us', 0):.2f} us each + "
                     f"{c.get('reorder_ns_per_byte', 0):.4f} ns per byte), fitted on {c['models']} models of the "
                     f"training families measured end to end (in-sample median error "
                     f"{c['median_abs_error_pct']:.1f}%)")
        lines.append(f"- without the conversions (scale refitted alone, {w['scale']:.3f}): within +-5% "
                     f"{100 * w['within_5pct']:.0f}%, +-10% {100 * w['within_10pct']:.0f}%, median abs error "
                     f"{w['median_abs_error_pct']:.1f}%; the kernel sum alone: within +-5% "
                     f"{100 * k['within_5pct']:.0f}%, +-10% {100 * k['within_10pct']:.0f}%, median abs error "
                     f"{k['median_abs_error_pct']:.1f}%")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", default=None)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hwopt_estimator_bench"))
    parser.add_argument("--holdout", default=",".join(HOLDOUT))
    parser.add_argument("--no-card", action="store_true", help="print only, do not write the card")
    parser.add_argument("--measure-only", action="store_true",
                        help="time every model end to end (cached in the workdir) and stop: the cpu sitting's part")
    args = parser.parse_args()
    for name in args.target or ["npu32", "cpu"]:
        evaluate(name, args.workdir, tuple(args.holdout.split(",")), not args.no_card, args.measure_only)


if __name__ == "__main__":
    main()
