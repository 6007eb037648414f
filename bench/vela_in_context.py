"""An Ethos-U in-context profile: whole models compiled by Vela, each kernel priced inside its model.

    PYTHONPATH=. python -m bench.vela_in_context -t ethos-u55-256 [-t ...] [--work build/vela_ic] [--variants 8]

The models (none a real export of ``tests/data``, PP-OCRv4 or the pretrained EfficientNet-Lite0 of
``bench/trained_case.py``, the unseen set): the shipped examples, the small MobileNetV2/V3 versions of
``bench/small_models.py``, the families of ``bench/context_models.py`` (more widths and sizes, SE-heavy
nets, U-Net-like decoders with Resize / ConvTranspose / Concat), and single-site variants the search
writes (``--variants`` per model, spread evenly over its decision list: fused IBN blocks, grouped and
dense depthwise convs, depth multipliers in context), and a pruned copy of every base model
(``pruned_copies``: each weight tensor magnitude-pruned to 0-90% zeros, so the rows span
``Kernel.weight_zeros`` as trained, pruned exports have it), and a copy of every model with PReLUs
with slopes over 1 (``wide_slope_copies``). Writes, per target:

- ``WORK/in_context.<target>.csv.gz``: one row per kernel descriptor, the mean of its in-model figures
  (``hwopt.estimator.in_context``; the same rows ``hwopt profile --in-context`` writes);
- ``WORK/end_to_end.<target>.csv``: every model's whole Vela latency (for ``hwopt train --end-to-end``).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
import onnx


def base_models(work: Path) -> dict[str, Path]:
    from bench.context_models import context_models
    from bench.small_models import small_models
    from examples.build import build_example
    from hwopt.estimator.profile import example_names

    out = {name: build_example(name, work / "examples") for name in example_names()}
    out.update(small_models(work / "small"))
    out.update(context_models(work / "models"))
    return out


def variants(models: dict[str, Path], work: Path, per_model: int, target) -> dict[str, Path]:
    """Up to ``per_model`` single-site variants of each model, written once into ``work/variants``."""
    from hwopt.calibration.samples import random_inputs
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.errors import HwoptError
    from hwopt.rewrites.apply import apply_steps
    from hwopt.search.config import default_rules_path, load_search_file
    from hwopt.search.decisions import _Unscored, site_decisions
    from hwopt.search.space import build_space
    from hwopt.search.variants import VariantModel
    from hwopt.analysis.sites import Analysis

    folder = work / "variants"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    config = load_search_file(default_rules_path())
    for label, path in models.items():
        done = sorted(folder.glob(f"{label}@*.onnx"))
        if done:
            out.update({p.stem: p for p in done})
            continue
        original, canonical, _ = load_canonical(path)
        analysis = Analysis(canonical)
        space = build_space(analysis, config, config.p or target.parallelism)
        found = site_decisions(space, VariantModel(analysis, space, target.fusion, target.dtype_bytes, _Unscored()))
        if not found:
            continue
        if len(found) > per_model:
            found = [found[int(i)] for i in np.unique(np.linspace(0, len(found) - 1, per_model).round())]
        calib, evaluation = random_inputs(original, 4, 0), random_inputs(original, 1, 1)
        for i, d in enumerate(found):
            try:
                result = apply_steps(original, canonical, space.steps(d.decisions), calib, evaluation)
            except HwoptError as exc:
                print(f"  {label} {d.label}: no variant ({exc})")
                continue
            p = folder / f"{label}@{i:02d}_{d.rule}.onnx"
            onnx.save(result.model, str(p))
            out[p.stem] = p
    return out


PRUNE_LEVELS = (0.0, 0.3, 0.5, 0.7, 0.9)  # per weight tensor; MediaPipe's pruned models: 40-70% overall
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # their second input is the weight


def edited_copies(models: dict[str, Path], work: Path, tag: str, edit) -> dict[str, Path]:
    """``LABEL@TAG``: each model as ``edit(model, initializers by name, rng)`` changes it in place (the rng
    seeded by the label), written once into ``work/TAG``; ``edit`` returns False for a model it has nothing
    to change in (no copy)."""
    import zlib

    folder = work / tag
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for label, path in models.items():
        target = folder / f"{label}@{tag}.onnx"
        if target.exists():
            out[target.stem] = target
            continue
        model = onnx.load(str(path))
        if edit(model, {t.name: t for t in model.graph.initializer}, np.random.default_rng(zlib.crc32(label.encode()))):
            onnx.save(model, str(target))
            out[target.stem] = target
    return out


def _prune(model: onnx.ModelProto, inits: dict, rng: np.random.Generator) -> bool:
    """Each conv/gemm weight magnitude-pruned to a share of zeros drawn from PRUNE_LEVELS."""
    from onnx import numpy_helper

    done = set()
    for node in model.graph.node:
        name = node.input[1] if node.op_type in WEIGHTED_OPS and len(node.input) > 1 else ""
        if name not in inits or name in done:
            continue
        done.add(name)
        w = numpy_helper.to_array(inits[name])
        share = float(rng.choice(PRUNE_LEVELS))
        if w.ndim < 2 or share == 0.0:
            continue
        cut = np.quantile(np.abs(w), share)
        inits[name].CopyFrom(numpy_helper.from_array(np.where(np.abs(w) <= cut, 0, w).astype(w.dtype), name))
    return True


def _widen_slopes(model: onnx.ModelProto, inits: dict, rng: np.random.Generator) -> bool:
    """Every PReLU's slopes drawn from [-0.5, 1.5]; False when the model has no PReLU."""
    from onnx import numpy_helper

    prelus = [node for node in model.graph.node if node.op_type == "PRelu"]
    for node in prelus:
        slope = numpy_helper.to_array(inits[node.input[1]])
        wide = rng.uniform(-0.5, 1.5, slope.shape).astype(slope.dtype)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(wide, node.input[1]))
    return bool(prelus)


def pruned_copies(models: dict[str, Path], work: Path) -> dict[str, Path]:
    """``LABEL@pruned``: each model with every conv/gemm weight magnitude-pruned to a share of zeros drawn
    (seeded by the label) from PRUNE_LEVELS, written once into ``work/pruned``. Same geometry, fewer bytes
    for a weight codec: what tells the trees what ``weight_zeros`` costs."""
    return edited_copies(models, work, "pruned", _prune)


def wide_slope_copies(models: dict[str, Path], work: Path) -> dict[str, Path]:
    """``LABEL@slopes``: each model with PReLUs, its slopes drawn from [-0.5, 1.5] (seeded by the label),
    written once into ``work/slopes``. The builder's slopes stay within [0, 0.5], which Vela lowers as
    max(alpha * x, x); trained PReLUs often have slopes over 1 (MediaPipe, MTCNN), which it lowers to four
    passes (``hwopt.analysis.kernels.prelu_form``)."""
    return edited_copies(models, work, "slopes", _widen_slopes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--target", action="append", required=True)
    parser.add_argument("--work", type=Path, default=Path("build/vela_ic"))
    parser.add_argument("--variants", type=int, default=8, help="single-site variants per model (0: none)")
    parser.add_argument("--mix", type=Path, default=None, metavar="SWEEP",
                        help="also write WORK/mixed.<target>.csv.gz: the in-context rows plus the rows of the sweep "
                             "table SWEEP.<target>.csv.gz whose kernels no model had (lone-kernel figures)")
    parser.add_argument("--no-pruned", dest="pruned", action="store_false",
                        help="leave out the pruned copies of the base models")
    args = parser.parse_args()
    from hwopt.backends.table_file import write_table
    from hwopt.estimator.in_context import in_context_rows
    from hwopt.targets import load_target

    base = base_models(args.work)
    models = dict(base)
    if args.variants:
        start = time.perf_counter()
        models.update(variants(dict(base), args.work, args.variants, load_target(args.target[0])))
        print(f"{len(models)} models with the variants ({time.perf_counter() - start:.0f} s)", flush=True)
    if args.pruned:
        models.update(pruned_copies(base, args.work))
    models.update(wide_slope_copies(base, args.work))
    for name in args.target:
        target = load_target(name)
        start = time.perf_counter()
        failed: list = []
        rows, results = in_context_rows(list(models.values()), target, failed=failed)
        for model, why in failed:
            print(f"  {name}: not compiled: {model}: {why}")
        table = args.work / f"in_context.{name}.csv.gz"
        write_table(table, rows)
        e2e = args.work / f"end_to_end.{name}.csv"
        by_label = {Path(p).stem: p for p in models.values()}
        with e2e.open("w", newline="") as f:
            writer = csv.DictWriter(f, ["model", "latency_us"])
            writer.writeheader()
            for r in results:
                writer.writerow({"model": os.path.relpath(by_label[r.name], e2e.parent),
                                 "latency_us": round(r.latency_us, 3)})
        if args.mix is not None:
            from hwopt.backends.table_file import read_table

            known = {m.kernel for m in rows}
            sweep = [m for m in read_table(Path(f"{args.mix}.{name}.csv.gz")) if m.kernel not in known]
            write_table(args.work / f"mixed.{name}.csv.gz", rows + sweep)
            print(f"{name}: mixed table {len(rows)} in-context + {len(sweep)} sweep rows")
        gap = max(abs(r.attributed_us / r.latency_us - 1) for r in results)
        unmapped = sum(r.unmapped_us for r in results) / sum(r.latency_us for r in results)
        print(f"{name}: {len(results)} models, {len(rows)} kernels in context, largest attribution gap "
              f"{gap:.3%}, unmapped share {unmapped:.3%} ({time.perf_counter() - start:.0f} s); wrote {table}, {e2e}",
              flush=True)


if __name__ == "__main__":
    main()
