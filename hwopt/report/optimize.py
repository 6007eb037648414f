"""The optimize report: rich tables on the terminal, Markdown, and JSON (schema ``hwopt.optimize/2``).

Sections: the side-by-side comparison (baseline, each rule alone, best) with
task fidelity and rel-L2 on every row, the finalists (predicted vs verified
fidelity), the latency / fidelity Pareto front, each inexact decision's
fidelity cost alone, the per-block decisions with each block's estimated
latency before and after, the other decisions, and the Pareto front of latency
against memory. The JSON document is specified in ``docs/optimize-json.md``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from hwopt.fidelity.bounds import CONFIDENCE
from hwopt.fidelity.metrics import METRICS
from hwopt.report.tables import growth_note, human_bytes, human_count, human_latency
from hwopt.search.optimize import Candidate, OptimizeResult
from hwopt.search.space import hidden_group

SCHEMA = "hwopt.optimize/2"
RANDOM_WARNING = ("NO CALIBRATION DATA: every fidelity figure is on seeded random inputs, which say nothing "
                  "about the task: give --calibration with real samples")
RETRAINING_NOTE = ("--for-retraining: no fidelity budget; the written weights are only an initialisation for "
                   "training, not a model to deploy: reproduce the decisions in the training code "
                   "(--save-rules writes them) and train")


def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "us":
        return human_latency(value)
    if kind == "bytes":
        return human_bytes(value)
    if kind == "count":
        return human_count(value)
    if kind == "dev":
        return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"
    if kind == "fid":  # one precision everywhere: tables, notes and budgets (99.84% never shows as 99.8%)
        return f"{value:.2%}"
    return str(value)


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def variant_dict(row: Candidate, baseline: Candidate) -> dict[str, Any]:
    f = row.figures
    return {
        "label": row.label,
        "latency_us": f["latency_us"],
        "latency_change": f["latency_us"] / baseline.figures["latency_us"] - 1.0,
        # Part of latency_us: streaming what does not fit the target's on-chip memory (no node's own).
        "memory_charge_us": float(f.get("memory_charge_us", 0.0)),
        "measured_latency_us": row.measured_us,
        "latency_low_us": row.band["low_us"] if row.band else None,  # the estimate's 80% band
        "latency_high_us": row.band["high_us"] if row.band else None,
        "interval": row.band,
        "params": int(f["params"]),
        "flops": int(f["flops"]),
        "peak_activation_bytes": int(f["peak_activation_bytes"]),
        "memory_bytes": int(f["memory_bytes"]),
        "deviation": _finite(row.deviation),
        "fidelity": _finite(row.fidelity.value) if row.fidelity is not None else None,
        "rel_l2": _finite(row.fidelity.rel_l2) if row.fidelity is not None else None,
        # The one-sided lower confidence bound of ``fidelity`` over independent held-out units (hwopt.fidelity.bounds)
        "fidelity_lower_bound": _finite(row.fidelity.lower) if row.fidelity is not None else None,
        "verified": row.fidelity is not None,
        "predicted_fidelity": row.predicted,
        "predicted_rel_l2": row.predicted_rel_l2,
        "id": row.id or None,
        "exact": row.exact,
        "rules": [s.label() for s in row.steps],
        "note": row.note,
    }


def decisions(result: OptimizeResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every decision of the best variant, per block: its choices and latency before and after)."""
    if result.best is None:
        return [], []
    vm, space = result.vm, result.space
    before = vm.slot_latencies(space.baseline)
    after = vm.slot_latencies(result.best.decisions)
    block_slots = vm.block_slots()
    hidden_to_block = {}
    for block in vm.analysis.blocks:
        group = hidden_group(vm.analysis, block)
        if group is not None:
            hidden_to_block[group.id] = block.id
    out = []
    by_block: dict[str, dict[str, Any]] = {}
    for var, d in zip(space.variables, result.best.decisions):
        option = var.options[d]
        entry = {
            "site": var.id, "kind": var.kind, "choice": option.label,
            "rule": option.choice.rule if option.choice else None,
            "exact": option.exact, "pinned": var.pinned,
            "needs_fine_tuning": not option.exact,
        }
        if var.kind == "block" and len(var.options) > 1:
            # What each option costs in this block, everything else as in the best variant: shows where
            # a rule helps on this target and where it does not.
            slots = block_slots.get(var.id, [])
            costs = {}
            for i, o in enumerate(var.options):
                trial = list(result.best.decisions)
                trial[space.index(var.id)] = i
                costs[str(o.value)] = float(vm.slot_latencies(tuple(trial))[slots].sum())
            entry["option_latency_us"] = costs
        block_id = var.id if var.kind == "block" else hidden_to_block.get(var.id)
        if block_id is not None and block_id in block_slots:
            slots = block_slots[block_id]
            record = by_block.setdefault(block_id, {"block": block_id, "choices": [],
                                                    "latency_before_us": float(before[slots].sum()),
                                                    "latency_after_us": float(after[slots].sum()),
                                                    "needs_fine_tuning": False})
            record["choices"].append(option.label if var.kind == "block" else f"hidden {option.label}")
            if "option_latency_us" in entry:
                record["option_latency_us"] = entry["option_latency_us"]
            record["needs_fine_tuning"] |= not option.exact
            entry["block"] = block_id
        out.append(entry)
    return out, list(by_block.values())


def fine_tuning(all_decisions: list[dict[str, Any]]) -> list[str]:
    """One entry per rewritten place that needs fine-tuning: a block with all its inexact choices, or a site."""
    places: dict[str, list[str]] = {}
    for d in all_decisions:
        if d["needs_fine_tuning"]:
            where = d.get("block") or d["site"]
            what = d["choice"] if d["kind"] != "ch" or "block" not in d else f"hidden {d['choice']}"
            places.setdefault(where, []).append(what)
    return [f"{where} ({', '.join(what)})" for where, what in places.items()]


def to_dict(result: OptimizeResult, output: Path | None, rules_out: Path | None,
            run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document; ``run``: how it was run (command line, inputs), said in every report."""
    seed = result.request.seed if result.request is not None else 0
    from hwopt.estimator.memory import basis
    from hwopt.search.figures import extra

    baseline = result.rows[0]
    all_decisions, blocks = decisions(result)
    doc = {
        "schema": SCHEMA,
        "status": "ok" if result.best is not None else "infeasible",
        "model": str(result.model_path),
        "canonicalization_notes": result.canonical_notes,  # what hwopt's exact clean-up folded
        # Nothing is written when the answer is the original (no file churn: hwopt.api.save_optimized).
        "output": str(output) if output and result.best is not None and result.best.steps else None,
        "rules_file": str(rules_out) if rules_out and result.best is not None and result.best.steps else None,
        "target": result.target.name,
        "parallelism": result.space.p,
        # Which hardware class the figures hold for (hwopt.targets.DEPTHWISE_CLASSES), and the memory charge.
        "hardware_class": result.target.hardware_class if result.target.backend == "scalesim" else None,
        "memory_budget_bytes": result.target.memory_budget_bytes or None,
        "cost_model": result.cost_name,
        "strategy": result.strategy,
        "seed": seed,
        "space": {"variables": len(result.space.variables), "size": result.space.size,
                  "distinct_kernels": result.vm.distinct_kernels, "rule_set": result.space.config.source},
        "evaluated": result.evaluated,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "budgets": result.budgets.to_dict(),
        "request": result.request.to_dict() if result.request is not None else None,
        "failure": result.failure,
        "variants": [variant_dict(row, baseline) for row in result.rows],
        "best": variant_dict(result.best, baseline) if result.best is not None else None,
        "blocks": blocks,
        "decisions": all_decisions,
        "fine_tuning": fine_tuning(all_decisions),
        "finalists": [variant_dict(c, baseline) for c in result.finalists],
        "run": run or {},
        "memory_basis": basis(result.space.p, result.target.dtype),
        "fidelity": fidelity_dict(result),
        "front": [variant_dict(c, baseline) for c in result.front],
        "sensitivity": [c.to_dict() for c in result.costs],
    }
    if result.recovered:
        doc["recovery"] = [r.to_dict() for r in result.recovered]
    doc["gain"] = result.gain.to_dict() if result.gain is not None else None
    doc.update(extra(result))
    if result.gain is not None and result.gain.verdict:
        doc["nothing_to_do"] = [result.gain.verdict] + [x for x in doc["nothing_to_do"] if "within the budgets" not in x]
    return doc


def rules_short(rules: list[str]) -> str:
    """``fuse-ibn x16, dw-to-dense x1``: each rule and how many sites its steps name (steps of one rule
    with different parameters, such as dw-to-grouped's group widths, count together)."""
    counts: dict[str, int] = {}
    for rule in rules:
        name, _, sites = rule.partition("@")
        rule_name = name.split(":")[0]
        counts[rule_name] = counts.get(rule_name, 0) + (len(sites.split(",")) if sites else 0)
    return ", ".join(name + (f" x{count}" if count else "") for name, count in counts.items()) or "(original)"


def fidelity_dict(result: OptimizeResult) -> dict[str, Any]:
    """The metric, the budget, the samples that judged it, and how well the prediction matched."""
    budget = result.fidelity_budget
    seen = {}
    for c in result.finalists + result.front:
        if c.predicted is not None and c.fidelity is not None and math.isfinite(c.fidelity.value):
            seen.setdefault(c.decisions, c)
    models = {m: result.fmodel.with_mode(m) for m in result.fmodel.MODES} if result.fmodel else {}
    pairs = [{"label": c.label, "id": c.id or None, "predicted": c.predicted, "verified": c.fidelity.value,
              **{m: model.predict(c.decisions)[0] for m, model in models.items()},
              "predicted_rel_l2": c.predicted_rel_l2, "verified_rel_l2": _finite(c.fidelity.rel_l2)}
             for c in seen.values()]
    errors = {m: float(np.mean([abs(p[m] - p["verified"]) for p in pairs])) if pairs else None for m in models}
    split = dict(result.split)
    best = result.best.fidelity if result.best is not None and result.best.fidelity is not None else None
    # An exact model's claim is exactness (verified numerically), not a statistic: no bound is claimed.
    exact = result.best is not None and (result.best.exact or not result.best.steps)
    bound = best.bound if best is not None and not exact else None
    return {
        **(budget.to_dict() if budget else {}),
        "metric_reason": result.metric_reason,
        "for_retraining": result.for_retraining,
        "samples": split,
        # The written model's claim: the lower confidence bound (inexact), its point estimate beside it.
        "point": _finite(best.value) if best is not None else None,
        "lower_bound": _finite(bound.lower) if bound is not None else None,
        "confidence": bound.confidence if bound is not None else CONFIDENCE,
        "bound_method": bound.method if bound is not None else None,
        "independent_samples": split.get("independent"),
        "independence": split.get("independence"),
        "independence_warning": split.get("independence_warning"),
        "unprovable": result.unprovable,
        "claim": claim(result),
        "warning": RANDOM_WARNING if split.get("random") else None,
        "retraining_note": RETRAINING_NOTE if result.for_retraining else None,
        "model": result.fidelity_model,
        "prediction": {
            "pairs": pairs,  # each verified variant: predicted (the model used) and both models' figures
            "mean_abs_error": float(np.mean([abs(p["predicted"] - p["verified"]) for p in pairs])) if pairs else None,
            "mean_abs_error_by_model": errors,
        },
    }


def claim(result: OptimizeResult) -> str | None:
    """What the report claims for the written model's fidelity, in one line."""
    best = result.best
    if best is None or best.fidelity is None or not best.fidelity.finite:
        return None
    fid, label = best.fidelity, METRICS[best.fidelity.metric].label if best.fidelity.metric in METRICS else "fidelity"
    point = f"{label} {_fmt(fid.value, 'fid')} measured on {fid.samples} held-out samples"
    if not best.steps:
        return f"the original, nothing rewritten ({point})"
    if best.exact:
        return (f"exact rewrites only: outputs verified identical to the original's within fp32 tolerance "
                f"(rel-L2 {_fmt(fid.rel_l2, 'dev')}; {point})")
    b = fid.bound
    if b is None:
        return point
    return (f"{label} >= {b.lower:.1%} with {b.confidence:.0%} confidence ({b.method} over {b.units} independent "
            f"held-out units: {result.split.get('independence', '')}); point estimate {_fmt(fid.value, 'fid')} "
            f"on {fid.samples} samples")


def _fid_cells(v: dict[str, Any]) -> list[str]:
    """Verified fidelity (or the prediction, marked ~), rel-L2 (verified)."""
    if v["fidelity"] is not None:
        fid = _fmt(v["fidelity"], "fid")
    elif v["verified"]:
        fid = "NaN"
    elif v.get("predicted_fidelity") is not None:
        fid = "~" + _fmt(v["predicted_fidelity"], "fid")
    else:
        fid = "-"
    return [fid, _fmt(v["rel_l2"], "dev") if v["rel_l2"] is not None else ("NaN" if v["verified"] else "-")]


def _bound_cell(v: dict[str, Any]) -> str:
    """The lower confidence bound (what an inexact row is admitted on); exact rows need none."""
    bound = v.get("fidelity_lower_bound")
    if v.get("verified") and v.get("exact"):
        return "exact"
    return _fmt(bound, "fid") if bound is not None else "-"


def _tables(doc: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every section, shared by the terminal and Markdown renderings."""
    label = doc["fidelity"].get("label", "fidelity")
    measured = any(v["measured_latency_us"] is not None for v in doc["variants"])
    notes = any(v["note"] for v in doc["variants"])
    banded = any(v.get("latency_low_us") is not None for v in doc["variants"])
    header = ["variant", "est. latency", "vs baseline"] + (["80% band"] if banded else []) + (
        ["measured"] if measured else []) + [
        label, "95% lower bound", "rel L2", "params", "peak act.", "memory", "FLOPs", "exact"] + (
        ["note"] if notes else [])
    rows = []
    for v in doc["variants"]:
        band = (f"{_fmt(v['latency_low_us'], 'us')} - {_fmt(v['latency_high_us'], 'us')}"
                if v.get("latency_low_us") is not None else "-")
        rows.append([v["label"] + (f" ({v['id']})" if v["id"] else ""), _fmt(v["latency_us"], "us"),
                     f"{v['latency_change']:+.1%}"]
                    + ([band] if banded else [])
                    + ([_fmt(v["measured_latency_us"], "us")] if measured else [])
                    + _fid_cells(v)[:1] + [_bound_cell(v)] + _fid_cells(v)[1:]
                    + [_fmt(v["params"], "count"), _fmt(v["peak_activation_bytes"], "bytes"),
                       _fmt(v["memory_bytes"], "bytes"), _fmt(v["flops"], "count"),
                       "yes" if v["exact"] else "no"] + ([v["note"]] if notes else []))
    sections = [(f"side by side ({label} and rel L2 on held-out samples; ~ predicted, not materialised)",
                 header, rows)]
    if doc["finalists"]:
        sections.append((f"finalists: predicted vs verified {label}",
                         ["finalist", "est. latency", "vs baseline", f"predicted {label}", f"verified {label}",
                          "95% lower bound", "rel L2", "exact", "verdict"],
                         [[c["label"] + (f" ({c['id']})" if c["id"] else ""), _fmt(c["latency_us"], "us"),
                           f"{c['latency_change']:+.1%}",
                           _fmt(c["predicted_fidelity"], "fid") if c["predicted_fidelity"] is not None else "-",
                           _fid_cells(c)[0], _bound_cell(c), _fid_cells(c)[1], "yes" if c["exact"] else "no",
                           c["note"] or "within the budgets"] for c in doc["finalists"]]))
    if doc["front"]:
        sections.append((f"Pareto front: estimated latency vs {label} (predicted; verified where materialised)",
                         ["id", "est. latency", "vs baseline", f"predicted {label}", f"verified {label}",
                          "rel L2", "decisions"],
                         [[c["id"], _fmt(c["latency_us"], "us"), f"{c['latency_change']:+.1%}",
                           _fmt(c["predicted_fidelity"], "fid"), *(_fid_cells(c) if c["verified"] else ["-", "-"]),
                           _short_rules(c["rules"])] for c in doc["front"]]))
    if doc["sensitivity"]:
        sections.append((f"{label} of each inexact decision alone (held-out samples)",
                         ["site", "choice", "rule", label, "rel L2", "seconds"],
                         [[c["site"], c["choice"], c["rule"], _fmt(c["fidelity"], "fid") if c["fidelity"] is not None
                           else "NaN", _fmt(c["rel_l2"], "dev") if c["rel_l2"] is not None else "NaN",
                           f"{c['seconds']:.1f}"] for c in doc["sensitivity"]]))
    if doc["blocks"]:
        sections.append(("per-block decisions (best)", ["block", "decision", "latency before", "latency after",
                                                        "change", "fine-tune", "each option (est.)"],
                         [[b["block"], ", ".join(b["choices"]), _fmt(b["latency_before_us"], "us"),
                           _fmt(b["latency_after_us"], "us"),
                           f"{b['latency_after_us'] / max(b['latency_before_us'], 1e-9) - 1:+.0%}",
                           "yes" if b["needs_fine_tuning"] else "",
                           "  ".join(f"{k} {_fmt(v, 'us')}" for k, v in b.get("option_latency_us", {}).items())]
                          for b in doc["blocks"]]))
    others = [d for d in doc["decisions"] if "block" not in d and d["rule"]]
    if others:
        sections.append(("other decisions (best)", ["site", "decision", "exact"],
                         [[d["site"], d["choice"], "yes" if d["exact"] else "no"] for d in others]))
    if doc["pareto"]:
        sections.append(("Pareto front: latency vs memory (estimated; --pick ID writes that variant)",
                         ["id", "est. latency", "memory", "params", "deviation", "exact", "rules"],
                         [[p["id"] + (" (chosen)" if p.get("chosen") else ""), _fmt(p["latency_us"], "us"),
                           _fmt(p["memory_bytes"], "bytes"), _fmt(p["params"], "count"),
                           _fmt(p.get("deviation"), "dev"),
                           "yes" if p.get("exact") else "no", rules_short(p.get("rules", []))]
                          for p in doc["pareto"]]))
    return sections


def _short_rules(rules: list[str]) -> str:
    """Rule steps, each site list cut to its first few: a front row must stay one line."""
    out = []
    for rule in rules:
        head, _, sites = rule.partition("@")
        names = sites.split(",") if sites else []
        out.append(head + (("@" + ",".join(names[:4]) + (f",+{len(names) - 4}" if len(names) > 4 else ""))
                           if names else ""))
    return "; ".join(out) or "(original)"


def stage_times(seconds: dict[str, float]) -> str:
    parts = [f"{k} {v:.1f} s" for k, v in seconds.items() if k != "total"]
    return ", ".join(parts) + (f" (total {seconds['total']:.1f} s)" if "total" in seconds else "")


def header(doc: dict[str, Any]) -> list[str]:
    """What produced the report: command, target, budgets, input data, where the model went."""
    run = doc.get("run") or {}
    names = {"max_memory_bytes": ("memory", "bytes"), "max_latency_us": ("latency", "us")}
    budgets = ", ".join(f"{names.get(k, (k.removeprefix('max_'), ''))[0]} <= {_fmt(v, names.get(k, ('', ''))[1])}"
                        for k, v in doc["budgets"].items() if v is not None) or "none"
    lines = []
    if run.get("command"):
        lines.append(f"command: {run['command']}")
    hardware = f", {doc['hardware_class']}" if doc.get("hardware_class") else ""
    lines.append(f"target: {doc['target']} (P={doc['parallelism']}{hardware}); budgets: {budgets}")
    inputs = run.get("inputs")
    if inputs:
        random = ("INPUT DATA: RANDOM (standard normal), not real samples: refits and deviations hold for noise "
                  "only; give --calibration FILE.npz")
        lines.append((random if inputs.get("random") else f"input data: {inputs['calibration']}")
                     + f" (at most {inputs.get('calibration_samples')} samples fit the refits; the split below)")
    lines.append(f"model written to: {doc['output']}" if doc.get("output") else "no model written")
    return lines


def _summary(doc: dict[str, Any]) -> list[str]:
    lines = header(doc)
    lines.append(f"{doc['model']}: cost model {doc['cost_model']}, "
                 f"{doc['strategy']} search over {doc['space']['size']:,} variants "
                 f"({doc['space']['variables']} decisions, {doc['space']['distinct_kernels']} distinct kernels), "
                 f"{doc['evaluated']:,} evaluated; stages: {stage_times(doc['seconds'])}")
    if doc.get("memory_basis"):
        lines.append(f"params and memory in the {doc['memory_basis']} (hwopt inspect counts the file as stored)")
    fid = doc["fidelity"]
    samples = fid.get("samples", {})
    lines.append(f"fidelity: {fid.get('label')} ({fid.get('metric')}) and rel L2 vs the original on "
                 f"{samples.get('held_out')} held-out samples never fitted on; {samples.get('fit')} samples fit "
                 f"the refits; {samples.get('source')}: {samples.get('split')}")
    if fid.get("metric_reason"):
        lines.append(f"fidelity metric: {fid['metric_reason']}")
    if fid.get("independent_samples") is not None:
        lines.append(f"independent held-out units: {fid['independent_samples']} ({fid.get('independence')}); "
                     f"an inexact variant is admitted on its {fid.get('confidence', 0.95):.0%} lower confidence "
                     f"bound")
    if fid.get("independence_warning"):
        lines.append("WARNING: " + fid["independence_warning"])
    if fid.get("unprovable"):
        lines.append("fidelity budget cannot be proved: " + fid["unprovable"])
    if fid.get("warning"):
        lines.append("WARNING: " + fid["warning"])
    budget = []
    if fid.get("min_fidelity") is not None:
        budget.append(f"{fid['label']} >= {fid['min_fidelity']:.2%}")
    if fid.get("max_deviation") is not None:
        budget.append(f"rel L2 <= {fid['max_deviation']:.4g}")
    lines.append("fidelity budget: " + (", ".join(budget) or "none")
                 + (f"; predicted per decision ({fid['model']} model), verified on the finalists"
                    if fid.get("model") else ""))
    if fid.get("retraining_note"):
        lines.append(fid["retraining_note"])
    if doc["best"] is not None:
        b = doc["best"]
        verified = f"{_fmt(b['fidelity'], 'fid')}" if b["fidelity"] is not None else "NaN"
        lines.append(f"best: {b['latency_change']:+.1%} estimated latency, "
                     f"{'exact' if b['exact'] else 'inexact'}, {fid.get('label')} {verified}"
                     + (f" (predicted {_fmt(b['predicted_fidelity'], 'fid')})" if b["predicted_fidelity"] is not None
                        else "") + f", rel L2 {_fmt(b['rel_l2'], 'dev') if b['rel_l2'] is not None else 'NaN'}")
        if fid.get("claim"):
            lines.append(f"fidelity claim: {fid['claim']}")
        if b.get("interval"):
            band = b["interval"]
            lines.append(f"best's 80% band: {_fmt(band['low_us'], 'us')} - {_fmt(band['high_us'], 'us')}"
                         f" ({band['ood_kernels']} kernel(s) outside the estimator's table); widest: "
                         + "; ".join(d["kernel"] + (" (out of table)" if d["ood"] else "") for d in band["drivers"]))
        if b.get("measured_latency_us") is not None and b.get("note"):
            lines.append(f"best: {b['note']}")
        growth = growth_note(doc)
        if growth:
            lines.append(growth)
        if doc["fine_tuning"]:
            refit = "random inputs" if (doc.get("run") or {}).get("inputs", {}).get("random") else "calibration data"
            lines.append(f"inexact rewrites (weights refit on {refit} only; fine-tuning can win back fidelity): "
                         + ", ".join(doc["fine_tuning"]))
    for r in doc.get("recovery", []):
        fmt = lambda v: "n/a" if v is None else _fmt(v, "fid")  # noqa: E731
        label = METRICS[r["metric"]].label if r["metric"] in METRICS else r["metric"]
        lines.append(f"recovered {r['label']} ({r['epochs']} epochs, {r['seconds']:.0f} s): {label} "
                     f"{fmt(r['before'])} -> {fmt(r['after'])} on the held-out samples"
                     + (f"; accuracy against the labels {fmt(r['accuracy']['before'])} -> "
                        f"{fmt(r['accuracy']['after'])} (original {fmt(r['accuracy']['original'])})"
                        if r.get("accuracy") else "")
                     + ("" if r["meets_budgets"] else " (misses the budgets)"))
    gain = doc.get("gain") or {}
    for d in gain.get("dropped", []):
        lines.append(f"dropped for noise: {d['site']} {d['choice']} -> {d['instead']}: {d['why']}")
    for p in gain.get("paired", []):
        lines.append(f"paired A/B ({p['label']}, {'exact' if p['exact'] else 'inexact'}) vs the original: "
                     f"{p['change']:+.1%} (95% interval {p['low'] - 1:+.1%} to {p['high'] - 1:+.1%}): "
                     + ("taken" if p["taken"] else "not taken") + f", {p['why']}")
    for line in doc.get("nothing_to_do", []):
        lines.append("nothing to do: " + line)
    for line in doc["failure"]:
        lines.append("FAILED: " + line)
    return lines


def brief(doc: dict[str, Any], report: Path | None = None) -> list[str]:
    """The default terminal output: what was written, the gain, the fidelity, what to look at next (the
    tables are in the report and behind --verbose)."""
    lines = []
    if doc.get("output"):
        lines.append(f"wrote {doc['output']}" + (f" and {doc['rules_file']}" if doc.get("rules_file") else ""))
    best, base = doc.get("best"), doc["variants"][0] if doc.get("variants") else None
    if best is not None and base is not None:
        lowering = (doc.get("gain") or {}).get("lowering")
        unpriced = " without the lowerings below" if lowering and lowering.get("taken") else ""
        lines.append(f"{Path(doc['model']).name} on {doc['target']}: {_fmt(base['latency_us'], 'us')} -> "
                     f"{_fmt(best['latency_us'], 'us')} estimated{unpriced} ({best['latency_change']:+.1%}), "
                     f"{'exact' if best['exact'] else 'inexact'}: {rules_short(best['rules'])}")
        if lowering:  # judged by the target's compiler, which the estimate above does not include
            lines.append(f"lowering: {lowering['why']}")
        fid = doc["fidelity"]
        samples = (fid.get("samples") or {}).get("held_out")
        value = _fmt(best["fidelity"], "fid") if best["fidelity"] is not None else "not verified"
        budget = f" (budget >= {_fmt(fid['min_fidelity'], 'fid')})" if fid.get("min_fidelity") is not None else ""
        lines.append(f"fidelity: {fid.get('label', 'fidelity')} {value} on {samples} held-out samples{budget}, "
                     f"rel L2 {_fmt(best['rel_l2'], 'dev') if best['rel_l2'] is not None else '-'}"
                     + (" (random inputs: see the note below)" if fid.get("warning") else ""))
        growth = growth_note(doc)
        if growth:
            lines.append(growth)
        if doc["fine_tuning"]:
            lines.append(f"needs fine-tuning: {len(doc['fine_tuning'])} rewritten place(s) (listed in the report)")
        if fid.get("retraining_note"):
            lines.append(fid["retraining_note"])
    front = len({p["id"] for p in doc.get("pareto", [])} | {f["id"] for f in doc.get("front", []) if f.get("id")})
    where = (f"open {report}" if report is not None and report.suffix.lower() in (".html", ".md")
             else "add --report report.html")
    lines.append(f"next: {where} for the side-by-side table, where the time goes per block and the fronts "
                 f"({front} points with ids for --pick); --verbose prints the tables here")
    return lines


def print_report(console: Console, doc: dict[str, Any], verbose: bool = True, report: Path | None = None) -> None:
    """``verbose``: the summary and every table (wide); else ``brief``. A piped console is never squeezed to 80
    columns (``hwopt.report.console``)."""
    if not verbose:
        for line in brief(doc, report):
            console.print(line, markup=False, highlight=False)
        return
    for line in _summary(doc):
        console.print(line, markup=False, highlight=False)
    for title, header, rows in _tables(doc):
        table = Table(title=title, show_edge=False)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    if doc.get("output"):
        console.print(f"wrote {doc['output']}" + (f" and {doc['rules_file']}" if doc.get("rules_file") else ""),
                      markup=False, highlight=False)


def markdown(doc: dict[str, Any]) -> str:
    out = [f"# hwopt optimize: {Path(doc['model']).name} on {doc['target']}", ""]
    out += [f"- {line}" for line in _summary(doc)] + [""]
    for title, header, rows in _tables(doc):
        out += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)
