"""Decision accuracy: every single-site option the search can take, estimated change vs measured change.

    python -m bench.decision_accuracy --target npu32 [--estimator DIR] [--models NAME,...] [--real PATH[:SHAPE] ...]
                                      [--max-sim-cost UNITS] [--json OUT] [--card]

For each model (the examples with search sites, the real exports in
``tests/data``, ``build/trained_case/efficientnet_lite0.onnx`` when
``bench/trained_case.py`` has built it, and any ``--real`` file), the default
rule set's search space is built and every option of every site is taken
alone on the original (``hwopt.search.decisions``): fuse / dense at each IBN
block, dense and grouped (dw-to-grouped) at each depthwise conv, pad / trim /
depth ratio at each channel group. The estimated change is the estimator's (what the search sees). The
measured change:

- npu32 (a sum of emulated kernels): only the kernels the decision changes are
  measured, before and after, by the SCALE-Sim backend (its per-layer disk
  cache makes re-runs free; kernels already in the target's measurements
  table are read from it: the same backend and settings). A decision whose
  new kernels are not cached and would cost more than ``--max-sim-cost``
  (``hwopt.backends.scalesim.simulation_cost`` units: ~2.5 us of emulation
  each on this machine) is counted as unmeasured, never guessed.
- cpu: each decision is materialised (``apply_steps``) and both models are timed
  end to end (``hwopt measure``), cached by the variant's canonical graph in
  ``--work``. Timings move with the host's load: read cpu figures from a quiet
  machine only.

Figures, over measured decisions: the share whose sign is right (a decision
whose measured change is within 0.2% of the model counts as right either way:
taking it or not changes the model by at most that), the same on the
decisions that matter (measured |change| > 2% of the model), and the error of
the change on those (in % of the model, and relative to the measured change).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwopt.errors import HwoptError  # noqa: E402

NEGLIGIBLE = 0.002  # |measured change| / model below this: either choice is fine
MATTERS = 0.02  # |measured change| / model above this: the decisions the error is reported on
REAL_SHAPES = {"ch_ppocr_mobile_v2.0_cls_infer": ["x=1x3x48x192"]}
TRAINED_CASE = ROOT / "build" / "trained_case" / "efficientnet_lite0.onnx"


@dataclass
class Row:
    model: str
    site: str
    rule: str
    option: str
    exact: bool
    estimated_us: float
    measured_us: float | None
    model_us: float  # the original model's measured latency (npu32: its kernels summed)
    kernels: list[str] = field(default_factory=list)  # the decision's new kernels (descriptions)
    baseline_us: float | None = None  # the --compare estimator's estimated change
    seen: bool = False  # every new kernel is a row of the target's measurements table (the estimator trained on it)
    # cpu: the measured relative change's 95% interval (paired protocol); None: exact (npu32 sums kernels)
    interval: tuple[float, float] | None = None
    # npu32 classes: the change as npu32's charge before 2026-12 measured it (every repeated run paying
    # SCALE-Sim's whole-layer total: bench/fair_figures.py), for the decisions whose sign the fair model flips
    old_measured_us: float | None = None
    old_model_us: float | None = None

    def sign_flipped(self) -> bool:
        """Measured faster under one charge and slower under the other (beyond the negligible band in either)."""
        if self.measured_us is None or self.old_measured_us is None:
            return False
        beyond = (abs(self.measured_us) > NEGLIGIBLE * self.model_us
                  or abs(self.old_measured_us) > NEGLIGIBLE * (self.old_model_us or self.model_us))
        return beyond and np.sign(self.measured_us) != np.sign(self.old_measured_us)

    @property
    def measured(self) -> bool:
        return self.measured_us is not None

    @property
    def resolved(self) -> bool:
        """Measured, and the measurement tells the sign: its interval excludes no change, or lies within the
        negligible band (either choice is then fine). The rest are unresolved, never counted right or wrong."""
        if self.measured_us is None:
            return False
        if self.interval is None:
            return True
        low, high = self.interval
        return low > 0 or high < 0 or (low >= -NEGLIGIBLE and high <= NEGLIGIBLE)

    def sign_right(self) -> bool:
        assert self.measured_us is not None
        if abs(self.measured_us) <= NEGLIGIBLE * self.model_us:
            return True
        return np.sign(self.estimated_us) == np.sign(self.measured_us)

    def matters(self) -> bool:
        return self.resolved and abs(self.measured_us) > MATTERS * self.model_us


class KernelTruth:
    """npu32 kernel latencies: the measurements table, else the backend (disk-cached), within a cost budget."""

    def __init__(self, target, max_cost: float, trained_on: Path | None = None) -> None:
        from hwopt.backends import get_backend
        from hwopt.backends.table_file import read_table

        self.backend = get_backend(target)
        table = target.folder / "measurements.csv.gz"
        self.known = {m.kernel: m.latency_us for m in read_table(table)} if table.exists() else {}
        # The kernels the estimator was trained on: its folder's table (the target's when it has none).
        trained_on = trained_on if trained_on is not None and trained_on.exists() else table
        self.table = frozenset(m.kernel for m in read_table(trained_on)) if trained_on.exists() else frozenset()
        self.max_cost = max_cost
        from hwopt.backends.scalesim import ScaleSimBackend
        from hwopt.targets import load_target

        self.reference = ScaleSimBackend(load_target("npu32"))  # the old charge: npu32's simulations
        self.old: dict = {}

    def old_latency(self, kernels) -> list[float]:
        """Each kernel as npu32's charge before 2026-12 measured it (bench/fair_figures.py: old_cycles)."""
        from bench.fair_figures import old_latency_us

        from hwopt.backends.scalesim import layer_for

        todo = [k for k in dict.fromkeys(kernels) if k not in self.old]
        # Only repeated layers (and, on a depthwise engine, depthwise convs) were charged otherwise: the rest
        # cost what they cost today (no simulation of large single layers again).
        repeated = [k for k in todo if k.kind in ("dwconv", "gconv", "gemm") and
                    (k.kind == "dwconv" or layer_for(k)[1] > 1)]
        if repeated:
            self.old.update((m.kernel, old_latency_us(m, self.reference.clock_mhz))
                            for m in self.reference.measure(repeated))
        rest = [k for k in todo if k not in self.old]
        self.old.update(zip(rest, self.latency(rest)))
        return [self.old[k] for k in kernels]

    def affordable(self, kernels) -> bool:
        from hwopt.backends.scalesim import ARRAY_KINDS, layer_for, simulation_cost

        for k in kernels:
            if k in self.known or k.kind not in ARRAY_KINDS:
                continue
            if self.backend._cached(layer_for(k)[0]) is None and simulation_cost(k) > self.max_cost:
                return False
        return True

    def latency(self, kernels) -> list[float]:
        todo = [k for k in dict.fromkeys(kernels) if k not in self.known]
        if todo:
            self.known.update((m.kernel, m.latency_us) for m in self.backend.measure(todo))
        return [self.known[k] for k in kernels]


def model_list(names: list[str] | None, real: list[str], work: Path,
               bundled: bool = False) -> list[tuple[str, Path, list[str]]]:
    from examples.build import build_example
    from hwopt.estimator.profile import example_names

    out = [(n, build_example(n, work / "examples"), []) for n in (example_names() if names is None else names)]
    return out + real_models(real, bundled=names is None or bundled)


def _weights_digest(path: Path) -> str:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    blobs = sorted(numpy_helper.to_array(t).tobytes() for t in model.graph.initializer)
    return hashlib.sha256(b"".join(hashlib.sha256(b).digest() for b in blobs)).hexdigest()


def read_specs(*files: Path) -> list[str]:
    """The ``PATH[:NAME=1x3xHxW]`` lines of specs files (``bench/mediapipe_exports`` and
    ``bench/package_exports`` write ``specs.txt``), as ``--real`` takes them."""
    return [line.strip() for specs in files for line in specs.read_text().splitlines() if line.strip()]


def real_models(extra: list[str], bundled: bool = True) -> list[tuple[str, Path, list[str]]]:
    """Real exports: ``tests/data``'s and the trained case when built (``bundled``), then each ``PATH[:SHAPE]``."""
    out: list[tuple[str, Path, list[str]]] = []
    if bundled:
        out += [(p.stem, p, REAL_SHAPES.get(p.stem, [])) for p in sorted((ROOT / "tests" / "data").glob("*.onnx"))]
        if TRAINED_CASE.exists():
            out.append(("trained_case_efficientnet_lite0", TRAINED_CASE, []))
    for spec in extra:
        path, _, shape = spec.partition(":")
        out.append((f"{Path(path).stem} [{Path(path).parent.name}]", Path(path), [shape] if shape else []))
    # The same model under two names (a specs list that repeats a tests/data export, converted again) would
    # count twice: the weights identify it, whatever order or names a converter gave them.
    unique, seen = [], {}
    for name, path, shapes in out:
        digest = _weights_digest(path) if path.exists() else name
        if (digest, tuple(shapes)) in seen:
            print(f"{name}: the same weights as {seen[digest, tuple(shapes)]}, counted once", flush=True)
            continue
        seen[digest, tuple(shapes)] = name
        unique.append((name, path, shapes))
    return unique


def decisions_of(path: Path, shapes: list[str], target, estimator_folder: Path | None):
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.io.model import InputShape
    from hwopt.search.config import default_rules_path, load_search_file
    from hwopt.search.cost import EstimatorCost
    from hwopt.search.decisions import site_decisions
    from hwopt.search.space import build_space
    from hwopt.search.variants import VariantModel
    from hwopt.analysis.sites import Analysis

    original, canonical, _ = load_canonical(path, [InputShape.parse(s) for s in shapes])
    config = load_search_file(default_rules_path())
    analysis = Analysis(canonical)
    space = build_space(analysis, config, config.p or target.parallelism)
    cost = EstimatorCost(target, folder=estimator_folder)
    vm = VariantModel(analysis, space, target.fusion, target.dtype_bytes, cost)
    return original, canonical, space, vm, site_decisions(space, vm)


def measure_npu32(name, path, shapes, target, truth: KernelTruth, estimator_folder, compare=None) -> list[Row]:
    _, _, space, vm, found = decisions_of(path, shapes, target, estimator_folder)
    other = decisions_of(path, shapes, target, compare)[4] if compare is not None else [None] * len(found)
    if not found:
        return []
    base = [k for k in vm.kernels(space.baseline) if k is not None]
    # The scale of "% of the model": the measured original, else (its kernels too costly to emulate) the estimate.
    old_model_us = None
    if truth.affordable(base):
        model_us = float(sum(truth.latency(base)))
        old_model_us = float(sum(truth.old_latency(base)))
    else:
        model_us = float(vm.latency(np.array([space.baseline]))[0])
        print(f"  {name}: original not emulated (too costly): percentages are of its estimate")
    rows = []
    for d, o in zip(found, other):
        measured = old = None
        if truth.affordable(d.after + d.before):
            measured = float(sum(truth.latency(list(d.after))) - sum(truth.latency(list(d.before))))
            old = float(sum(truth.old_latency(list(d.after))) - sum(truth.old_latency(list(d.before))))
        rows.append(Row(name, d.site, d.rule, d.option, d.exact, d.estimated_us, measured, model_us,
                        [k.describe() for k in d.after], o.estimated_us if o is not None else None,
                        all(k in truth.table for k in d.after), old_measured_us=old, old_model_us=old_model_us))
    return rows


def measure_cpu(name, path, shapes, target, work: Path, estimator_folder, rounds: int = 12, runs: int = 8,
                prepare_only: bool = False, aa: int = 0, cached_only: bool = False) -> list[Row]:
    """Each decision materialised (its canonical variant kept on disk in ``work``) and timed against the
    original by the paired, interleaved protocol (``hwopt.backends.ort_paired``), cached by both graphs."""
    import onnx

    from hwopt.rewrites.apply import apply_steps
    from hwopt.backends.ort_cpu import TimingSettings
    from hwopt.backends.ort_paired import PairedChange, paired_change
    from hwopt.calibration.samples import random_inputs
    from hwopt.canonical.canonicalize import canonicalize

    original, canonical, space, vm, found = decisions_of(path, shapes, target, estimator_folder)
    if not found:
        return []
    settings = TimingSettings.from_target(target)
    canonical = canonicalize(canonical, verify=False)[0]  # what hwopt measure times
    base_key = hashlib.sha256(canonical.SerializeToString()).hexdigest()[:16]
    folder = work / "variants" / name.replace(" ", "_").replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    cache_path = work / "decision_cpu_paired.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    calib, evaluation = random_inputs(original, 8, 0), random_inputs(original, 2, 1)

    def variant(d):
        file = folder / (hashlib.sha256(d.label.encode()).hexdigest()[:16] + ".onnx")
        if not file.exists():
            result = apply_steps(original, canonical, space.steps(d.decisions), calib, evaluation)
            onnx.save(canonicalize(result.model, verify=False)[0], str(file))
        return file

    for i in range(aa):  # A/A: the protocol against itself
        c = paired_change(canonical, canonical, settings, rounds, runs)
        print(f"  {name} A/A {i + 1}: {100 * (c.ratio - 1):+.2f}% [{100 * (c.low - 1):+.2f}, {100 * (c.high - 1):+.2f}]"
              f" of {c.base_us / 1000:.3f} ms", flush=True)
    rows = []
    for d in found:
        try:
            file = variant(d)
        except HwoptError as exc:
            print(f"  {name} {d.label}: not materialised ({exc})")
            rows.append(Row(name, d.site, d.rule, d.option, d.exact, d.estimated_us, None, float("nan"),
                            [k.describe() for k in d.after]))
            continue
        if prepare_only:
            continue
        key = f"{base_key}:{hashlib.sha256(file.read_bytes()).hexdigest()[:16]}:{rounds}x{runs}"
        if key not in cache and cached_only:
            rows.append(Row(name, d.site, d.rule, d.option, d.exact, d.estimated_us, None, float("nan"),
                            [k.describe() for k in d.after]))
            continue
        if key not in cache:
            cache[key] = paired_change(canonical, onnx.load(str(file)), settings, rounds, runs).to_dict()
            cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))
        c = PairedChange.from_dict(cache[key])
        rows.append(Row(name, d.site, d.rule, d.option, d.exact, d.estimated_us, c.change_us, c.base_us,
                        [k.describe() for k in d.after], interval=(c.low - 1.0, c.high - 1.0)))
    model_us = float(np.median([r.model_us for r in rows if r.measured])) if any(r.measured for r in rows) else 1.0
    for r in rows:  # one scale per model: the median of the rounds' A medians over its decisions
        if r.measured:
            r.measured_us = r.measured_us / r.model_us * model_us
        r.model_us = model_us
    return rows


def measure_vela(name, path, shapes, target, work: Path, estimator_folder, limit: int | None = None) -> list[Row]:
    """Ethos-U: each decision materialised and the whole variant compiled by Vela, against the original
    compiled whole (Vela schedules across layers: the truth is the whole model, not its changed kernels).
    Vela is deterministic, so a decision is unresolved only when Vela or the writer fails on its variant.
    ``limit``: at most this many decisions per model, spread evenly over its list (sites in graph order)."""
    from hwopt.backends.vela import measure_model
    from hwopt.calibration.samples import random_inputs
    from hwopt.rewrites.apply import apply_steps

    original, canonical, space, vm, found = decisions_of(path, shapes, target, estimator_folder)
    if not found:
        return []
    if limit is not None and len(found) > limit:
        found = [found[int(i)] for i in np.unique(np.linspace(0, len(found) - 1, limit).round())]
    model_us = float(measure_model(canonical, target).latency_us)
    calib, evaluation = random_inputs(original, 8, 0), random_inputs(original, 2, 1)
    rows = []
    for d in found:
        measured = None
        try:
            result = apply_steps(original, canonical, space.steps(d.decisions), calib, evaluation)
            measured = float(measure_model(result.model, target).latency_us) - model_us
        except HwoptError as exc:
            print(f"  {name} {d.label}: not measured ({exc})")
        rows.append(Row(name, d.site, d.rule, d.option, d.exact, d.estimated_us, measured, model_us,
                        [k.describe() for k in d.after]))
    return rows


def figures(rows: list[Row]) -> dict:
    timed = [r for r in rows if r.measured]
    measured = [r for r in timed if r.resolved]
    matters = [r for r in measured if r.matters()]
    out = {"decisions": len(rows), "measured": len(measured), "unmeasured": len(rows) - len(timed),
           "unresolved": len(timed) - len(measured),
           "sign_right": float(np.mean([r.sign_right() for r in measured])) if measured else float("nan"),
           "negligible": sum(abs(r.measured_us) <= NEGLIGIBLE * r.model_us for r in measured),
           "matters": len(matters),
           "sign_right_matters": float(np.mean([r.sign_right() for r in matters])) if matters else float("nan")}
    if matters:
        err = np.array([abs(r.estimated_us - r.measured_us) / r.model_us * 100 for r in matters])
        rel = np.array([abs(r.estimated_us - r.measured_us) / abs(r.measured_us) * 100 for r in matters])
        out.update({"abs_error_pct_of_model_median": float(np.median(err)),
                    "abs_error_pct_of_model_p90": float(np.percentile(err, 90)),
                    "rel_error_pct_median": float(np.median(rel)), "rel_error_pct_p90": float(np.percentile(rel, 90))})
    return out


def summary_lines(target: str, per_model: dict[str, dict], total: dict, unseen: dict, note: str,
                  paired: bool = False, whole_model: bool = False) -> list[str]:
    def pct(x):
        return "-" if x != x else f"{100 * x:.0f}%"

    lines = ["- every single-site option of the default rule set (fuse / dense / grouped / pad / trim / depth "
             f"ratio), taken alone on the original: estimated vs measured change of the model's latency ({note})",
             f"- a sign counts as right when it agrees, or when the measured change is within "
             f"{100 * NEGLIGIBLE:.1f}% of the model; 'matter': measured |change| > {100 * MATTERS:.0f}% of the model"]
    if paired:
        lines += [f"- unresolved by measurement: {total['unresolved']} of {total['decisions']} decisions whose "
                  "measured change's 95% interval contains no change (and is not within the negligible band): "
                  "counted neither right nor wrong, and left out of 'resolved'",
                  f"- not measured: {total['unmeasured']} of {total['decisions']} (not materialised, or not timed "
                  "in a sitting yet: --cached-only)",
                  "", "| model | decisions | resolved | unresolved | sign right | matter | sign right (matter) | "
                  "|error| % of model (median / p90, matter) |", "|---|---|---|---|---|---|---|---|"]
    elif whole_model:
        lines += [f"- not measured: {total['unmeasured']} of {total['decisions']} decisions (the writer or Vela "
                  "failed on the variant); a compiled variant is deterministic, so none is unresolved",
                  "", "| model | decisions | measured | sign right | matter | sign right (matter) | |error| % of "
                  "model (median / p90, matter) |", "|---|---|---|---|---|---|---|"]
    else:
        lines += [f"- not measured: {total['unmeasured']} of {total['decisions']} decisions whose new kernels were "
                  "not emulated yet (each over --max-sim-cost, minutes of SCALE-Sim on a shared 2-core host: dense "
                  "convs of wide late layers, fused blocks and x1.25 widths at full resolution); never guessed",
                  "", "| model | decisions | measured | sign right | matter | sign right (matter) | |error| % of "
                  "model (median / p90, matter) |", "|---|---|---|---|---|---|---|"]
    # cpu rows do not know which kernels the table holds (the variants are timed whole): no 'unseen' row there.
    unseen_row = [] if paired or whole_model else [("**new kernels not in the table**", unseen)]
    for name, f in list(per_model.items()) + [("**all**", total)] + unseen_row:
        err = (f"{f['abs_error_pct_of_model_median']:.2f} / {f['abs_error_pct_of_model_p90']:.2f}"
               if "abs_error_pct_of_model_median" in f else "-")
        middle = f"{f['measured']} | {f['unresolved']} |" if paired else f"{f['measured']} |"
        lines.append(f"| {name} | {f['decisions']} | {middle} {pct(f['sign_right'])} | {f['matters']} | "
                     f"{pct(f['sign_right_matters'])} | {err} |")
    return lines


def main() -> int:
    from rich.console import Console

    from hwopt.targets import load_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="npu32")
    parser.add_argument("--estimator", type=Path, default=None, help="estimator folder (default: the target's)")
    parser.add_argument("--models", default=None, help="example names, or none (default: all, plus the real exports)")
    parser.add_argument("--real-from", action="append", default=[], type=Path, metavar="SPECS",
                        help="a file of --real lines (bench/mediapipe_exports and bench/package_exports write specs.txt)")
    parser.add_argument("--real", action="append", default=[], help="a real export PATH[:NAME=1x3xHxW]")
    parser.add_argument("--with-real", action="store_true",
                        help="with --models: also the bundled real exports (tests/data, the trained case when built)")
    parser.add_argument("--compare", type=Path, default=None,
                        help="another estimator folder (the previous one): its sign accuracy on the same decisions")
    parser.add_argument("--compare-label", default=None, help="how the card names the --compare estimator")
    parser.add_argument("--max-sim-cost", type=float, default=2e7,
                        help="npu32: largest uncached kernel to emulate (simulation_cost units)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "decision_accuracy")
    parser.add_argument("--json", type=Path, default=None, help="write every decision as JSON")
    parser.add_argument("--card", action="store_true", help="write the figures into the target's card")
    parser.add_argument("--caveat", default="", help="a line the card carries with the figures (e.g. a loaded host)")
    parser.add_argument("--limit", type=int, default=None,
                        help="vela: at most this many decisions per model, spread evenly (each is a whole-model compile)")
    parser.add_argument("--worst", type=int, default=12, help="print the worst decisions")
    parser.add_argument("--rounds", type=int, default=12, help="cpu: rounds of the paired protocol")
    parser.add_argument("--runs", type=int, default=8, help="cpu: runs of each model per round")
    parser.add_argument("--prepare-only", action="store_true", help="cpu: build the variants, time nothing")
    parser.add_argument("--aa", type=int, default=0, help="cpu: A/A checks of the protocol per model first")
    parser.add_argument("--cached-only", action="store_true",
                        help="cpu: time nothing; decisions not timed yet count as not measured")
    args = parser.parse_args()
    args.real += read_specs(*args.real_from)
    target = load_target(args.target)
    args.work.mkdir(parents=True, exist_ok=True)
    names = None if not args.models else [] if args.models == "none" else args.models.split(",")
    trained_on = (args.estimator or target.folder) / "measurements.csv.gz"
    truth = KernelTruth(target, args.max_sim_cost, trained_on) if target.backend == "scalesim" else None
    rows: list[Row] = []
    start = time.perf_counter()
    for name, path, shapes in model_list(names, args.real, args.work, args.with_real):
        t0 = time.perf_counter()
        try:
            if truth is not None:
                found = measure_npu32(name, path, shapes, target, truth, args.estimator, args.compare)
            elif target.backend == "vela":
                found = measure_vela(name, path, shapes, target, args.work, args.estimator, args.limit)
            else:
                found = measure_cpu(name, path, shapes, target, args.work, args.estimator, args.rounds, args.runs,
                                    args.prepare_only, args.aa, args.cached_only)
        except HwoptError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        rows += found
        if found:
            f = figures(found)
            print(f"{name:48s} {f['measured']:3d}/{f['decisions']:3d} measured  sign right "
                  f"{100 * f['sign_right']:5.1f}%  matter {f['matters']:3d}  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    per_model = {}
    for name in dict.fromkeys(r.model for r in rows):
        per_model[name] = figures([r for r in rows if r.model == name])
    total = figures(rows)
    unseen = figures([r for r in rows if not r.seen])  # decisions whose new kernels the estimator never saw
    note = ("npu32: the changed kernels emulated by SCALE-Sim" if truth is not None else
            f"{target.name}: each variant and the original compiled whole by Vela (deterministic)"
            + (f", at most {args.limit} decisions per model spread evenly" if args.limit else "")
            if target.backend == "vela" else
            f"cpu: each variant timed against the original by the paired, interleaved protocol of "
            f"hwopt/backends/ort_paired.py, {args.rounds} rounds x {args.runs} runs each, fresh sessions per round, "
            f"one thread, the session thread's CPU clock; the change is the median of the rounds' ratios, with a "
            f"95% bootstrap interval")
    lines = summary_lines(target.name, per_model, total, unseen, note, paired=truth is None and target.backend != "vela",
                          whole_model=target.backend == "vela")
    if args.caveat:
        lines.insert(0, f"- **caveat:** {args.caveat}")
    if args.compare is not None:
        before = [replace(r, estimated_us=r.baseline_us) for r in rows]
        fb = figures(before)
        wrong_before = [r for r in before if r.resolved and not r.sign_right()]
        lines += ["", f"- the same decisions with {args.compare_label or args.compare}: "
                  f"sign right {100 * fb['sign_right']:.1f}% "
                  f"({len(wrong_before)} wrong: " + "; ".join(
                      f"{r.model} {r.site} {r.option} estimated {100 * r.estimated_us / r.model_us:+.1f}%, measured "
                      f"{100 * r.measured_us / r.model_us:+.1f}%" for r in wrong_before) + "); |error| median / p90 "
                  f"{fb.get('abs_error_pct_of_model_median', float('nan')):.2f} / "
                  f"{fb.get('abs_error_pct_of_model_p90', float('nan')):.2f}% of the model"]
    if truth is not None:
        compared = [r for r in rows if r.measured and r.old_measured_us is not None]
        flipped = [r for r in compared if r.sign_flipped()]
        by_rule = {rule: sum(1 for r in flipped if r.rule == rule) for rule in dict.fromkeys(r.rule for r in flipped)}
        lines += ["", f"- measured sign flipped against npu32's charge before 2026-12 (every repeated run paying "
                  f"SCALE-Sim's whole-layer total): {len(flipped)} of {len(compared)} measured decisions"
                  + (" (" + ", ".join(f"{rule} {n}" for rule, n in by_rule.items()) + ")" if flipped else "")]
    console = Console(width=250)
    for line in lines:
        console.print(line, markup=False, highlight=False)
    wrong = sorted((r for r in rows if r.resolved and not r.sign_right()),
                   key=lambda r: -abs(r.measured_us - r.estimated_us))
    if wrong:
        console.print(f"\nwrong sign ({len(wrong)}), largest error first:", markup=False)
        for r in wrong[:args.worst]:
            console.print(f"  {r.model} {r.site}: {r.option}  estimated {100 * r.estimated_us / r.model_us:+.2f}%  "
                          f"measured {100 * r.measured_us / r.model_us:+.2f}%  new kernels: "
                          f"{'; '.join(r.kernels[:3])}", markup=False, highlight=False)
    console.print(f"{time.perf_counter() - start:.0f} s", markup=False)
    if args.json:
        args.json.write_text(json.dumps({"target": target.name, "figures": total, "unseen": unseen,
                                         "per_model": per_model,
                                         "rows": [vars(r) for r in rows]}, indent=1, default=float))
    if args.card:
        from hwopt.estimator.card import read_card, write_card

        folder = args.estimator or target.folder
        card = read_card(folder)
        card["decision_accuracy"] = {"figures": total, "unseen": unseen, "per_model": per_model, "summary_lines": lines,
                                     "command": "python -m bench.decision_accuracy " + shlex.join(sys.argv[1:])}
        write_card(folder, card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
