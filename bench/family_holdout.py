"""Leave-one-family-out check of an Ethos-U estimator recipe, on the training models only.

    PYTHONPATH=. python -m bench.family_holdout -t ethos-u55-256 [--work build/vela_ic] [--recipe NAME ...]

The real exports are the estimator's test; choosing a recipe by looking at them would fit the test. This
bench chooses on the training corpus instead: the in-context models of ``bench/vela_in_context.py`` (the
examples, the small and context families and their single-site variants, read from WORK, written there by
that bench) are compiled whole once (Vela is deterministic; per model and kernel figures cached in
``WORK/holdout.<target>.json``), then for each family every model of that family (base and variants) is
left out, the estimator is trained on the in-context rows of the other families plus the sweep rows
(``WORK/sweep.<target>.csv.gz``) no remaining model had, and the left-out models are estimated (kernel
sum, no in-model term: it is 0.997-1.027 x on the four targets) against Vela's whole-model figure.
Prints, per recipe and family, the share of models within 10% and the median |error|.

Recipes (``--recipe``): ``log`` (the shipped regressor: log latency; kinds with 10 to 39 rows in small
groups of their own, ``hwopt.estimator.regressor.SMALL_ROWS``), ``pooled`` (those kinds in one shared group, as
shipped before 2026-12-07's session 11; the offset base's median intercept stays), ``own10`` (a full group, base chosen and grid
searched, for every kind with at least 10 rows), ``log1`` (log of latency + 1 us,
``hwopt.estimator.regressor.LOG_OFFSET``; a kernel Vela merges into its neighbour costs 0, which plain
logs put at log(0.001 us), far below every real kernel, and the few-row kinds of the shared group are
then fitted on two clusters).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def family(label: str) -> str:
    """blaze~a_96@01_dw-to-grouped -> blaze; blaze~a_128_prelu -> blaze-prelu; mobilenetv2~w0.5_64 ->
    mobilenetv2; an example (mobilenetv2, efficientnet_lite0, ...) is its own family name."""
    base = label.split("@")[0]
    name = base.split("~")[0]
    if name == "blaze" and base.endswith("_prelu"):
        return "blaze-prelu"
    if name in ("mobilenetv2", "mobilenetv3_small"):
        return name
    return name.split("_w")[0] if name.startswith(("mobilenetv2_", "mobilenetv3_small_")) else name


def per_model(work: Path, target_name: str) -> list[dict]:
    """Every in-context model's Vela latency and kernels' in-context figures (cached in WORK)."""
    from bench.vela_in_context import base_models, pruned_copies, variants, wide_slope_copies
    from hwopt.estimator.in_context import in_context_rows
    from hwopt.targets import load_target

    cache = work / f"holdout.{target_name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    target = load_target(target_name)
    base = base_models(work)
    models = dict(base)
    models.update(variants(dict(base), work, 6, target))
    models.update(pruned_copies(base, work))
    models.update(wide_slope_copies(base, work))
    start = time.perf_counter()
    _, results = in_context_rows(list(models.values()), target, failed=[])
    by_path = {Path(p).stem: label for label, p in models.items()}
    out = [{"label": by_path.get(r.name, r.name), "latency_us": r.latency_us,
            "kernels": [[dataclasses.asdict(k.kernel), k.latency_us] for k in r.kernels
                        if k.kernel.kind not in ("view", "unknown")]} for r in results]
    cache.write_text(json.dumps(out))
    print(f"{target_name}: {len(out)} models compiled whole ({time.perf_counter() - start:.0f} s)", flush=True)
    return out


def rows_of(models: list[dict], target, sweep) -> list:
    """In-context rows (mean per descriptor, floor for all-zero) plus the sweep rows no model had."""
    from hwopt.analysis.kernel import Kernel
    from hwopt.backends.base import Measurement
    from hwopt.estimator.in_context import FLOOR_US

    figures: dict = collections.defaultdict(list)
    for m in models:
        for kernel, us in m["kernels"]:
            figures[Kernel(**kernel)].append(us)
    rows = [Measurement(k, float(np.mean(v)) if np.mean(v) > 0 else FLOOR_US, None, target.backend,
                        {"in_context": True}) for k, v in figures.items()]
    return rows + [m for m in sweep if m.kernel not in figures]


def main() -> None:
    from hwopt.analysis.kernel import Kernel
    from hwopt.backends.table_file import read_table
    from hwopt.estimator import load_estimator
    from hwopt.estimator import regressor
    from hwopt.estimator.train import train_estimator
    from hwopt.targets import load_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--target", default="ethos-u55-256")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "vela_ic")
    parser.add_argument("--recipe", action="append", default=None, choices=("log", "pooled", "log1", "own10"))
    args = parser.parse_args()
    target = load_target(args.target)
    models = per_model(args.work, args.target)
    sweep = read_table(args.work / f"sweep.{args.target}.csv.gz")
    families = collections.defaultdict(list)
    for m in models:
        families[family(m["label"])].append(m)
    print(f"{args.target}: {len(models)} models in {len(families)} families: "
          + ", ".join(f"{f} {len(v)}" for f, v in sorted(families.items())))
    # recipe -> (LOG_OFFSET, MIN_ROWS, SMALL_ROWS): concat, pool, resize and softmax have 12-39 in-context rows;
    # "pooled" (SMALL_ROWS = MIN_ROWS) mixes them in one shared group on one base, as before session 11
    recipes = {"log": (0.0, 40, 10), "pooled": (0.0, 40, 40), "log1": (1.0, 40, 10), "own10": (0.0, 10, 10)}
    summary = {}
    for recipe in args.recipe or ["log", "pooled"]:
        regressor.LOG_OFFSET, regressor.MIN_ROWS, regressor.SMALL_ROWS = recipes[recipe]
        errors_all = []
        for name, held in sorted(families.items()):
            rest = [m for m in models if family(m["label"]) != name]
            with tempfile.TemporaryDirectory() as folder:
                train_estimator(rows_of(rest, target, sweep), target, folder)
                est = load_estimator(target, folder, allow_fallback=True)
                errors = []
                for m in held:
                    kernels = [Kernel(**k) for k, _ in m["kernels"]]
                    estimate = float(est.predict(kernels).sum())
                    errors.append(estimate / m["latency_us"] - 1)
            errors = np.array(errors)
            errors_all += errors.tolist()
            print(f"  {recipe:5} {name:<22} {len(held):3} models  within 10%: {np.mean(np.abs(errors) <= 0.10):5.0%}  "
                  f"median |error| {np.median(np.abs(errors)):6.1%}  worst {errors[np.argmax(np.abs(errors))]:+7.1%}",
                  flush=True)
        e = np.abs(np.array(errors_all))
        summary[recipe] = (np.mean(e <= 0.10), np.median(e))
    for recipe, (within, median) in summary.items():
        print(f"{args.target} {recipe}: all held-out models within 10%: {within:.0%}, median |error| {median:.1%}")


if __name__ == "__main__":
    main()
