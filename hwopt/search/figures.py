"""What the optimize reports plot, computed from an ``OptimizeResult``.

- ``timeline``: a variant's kernels in schedule order, merged into segments
  (an IBN block, or the kernels between blocks), each with its estimated
  latency, its multiply-accumulates and the target's utilisation limit
  (MACs / (P x P) cycles at the target's clock: the array busy every cycle).
  The segments of a variant sum to its estimated latency exactly.
- ``pareto``: the front with ids (``p1``...: ``hwopt optimize --pick p3``; the
  latency / fidelity front continues the same numbering), the rules of each
  point, and which one was chosen.
- ``nothing_to_do``: when the best variant is the original, why, per rule.
- ``provenance``: which cost model scored the kernels, the estimator card's
  held-out error, the kernels scored by a fallback.
"""

from __future__ import annotations

import numpy as np

import json
from typing import Any

from hwopt.search.optimize import OptimizeResult


def _clock_mhz(target) -> float | None:
    value = (target.backend_settings or {}).get("clock_mhz")
    return float(value) if value else None


def block_choices(result: OptimizeResult, decisions: tuple[int, ...]) -> dict[str, str]:
    """Block id -> what the variant changes there (its own option, its hidden width), e.g. ``fuse, hidden 64 ch``."""
    from hwopt.search.space import hidden_group

    vm, space = result.vm, result.space
    block_of_group = {}
    for block in vm.analysis.blocks:
        group = hidden_group(vm.analysis, block)
        if group is not None:
            block_of_group[group.id] = block.id
    out: dict[str, list[str]] = {}
    for var, d in zip(space.variables, decisions):
        option = var.options[d]
        if option.choice is None:
            continue
        if var.kind == "block":
            out.setdefault(var.id, []).insert(0, option.label)
        elif var.kind == "dw" and var.dw is not None and var.dw.block:  # the depthwise conv of a block without expand
            out.setdefault(var.dw.block, []).insert(0, option.label)
        elif var.id in block_of_group:
            out.setdefault(block_of_group[var.id], []).append(f"hidden {option.label}")
    return {block: ", ".join(labels) for block, labels in out.items()}


def timeline(result: OptimizeResult, decisions: tuple[int, ...]) -> list[dict[str, Any]]:
    vm, space = result.vm, result.space
    owner: dict[int, str] = {}
    for block, slots in vm.block_slots().items():
        for slot in slots:
            owner[slot] = block
    choices = block_choices(result, decisions)
    latencies = vm.slot_latencies(decisions)
    kernels = vm.kernels(decisions)
    p, clock = space.p, _clock_mhz(result.target)
    segments: list[dict[str, Any]] = []
    for slot, (latency, kernel) in enumerate(zip(latencies, kernels)):
        label = owner.get(slot, "other")
        if not segments or segments[-1]["label"] != label:
            segments.append({"label": label, "latency_us": 0.0, "macs": 0, "kernels": 0,
                             "rule": choices.get(label, "")})
        seg = segments[-1]
        seg["latency_us"] += float(latency)
        if kernel is not None:
            seg["macs"] += int(kernel.macs)
            seg["kernels"] += 1
    for seg in segments:
        seg["ideal_us"] = seg["macs"] / (p * p) / clock if clock else None
    # What does not fit the target's on-chip memory is streamed on every inference: its own segment, so the
    # segments still sum to the variant's latency.
    charge = float(vm.evaluate(np.array([decisions]))["memory_charge_us"][0])
    if charge > 0:
        segments.append({"label": "off-chip memory", "latency_us": charge, "macs": 0, "kernels": 0,
                         "rule": "weights and activations beyond the on-chip budget, streamed from DRAM",
                         "ideal_us": 0.0 if clock else None})  # no MACs: the array idles while it streams
    return segments


def pareto(result: OptimizeResult) -> list[dict[str, Any]]:
    """The front (ids p1, p2, ... in its order), each point's rules, deviation when materialised, chosen."""
    known = {c.decisions: c for c in list(result.finalists) + list(result.rows)}
    best = result.best.decisions if result.best is not None else None
    out = []
    for i, point in enumerate(result.pareto):
        d = tuple(point["decisions"])
        cand = known.get(d)
        out.append({"id": f"p{i + 1}", **{k: v for k, v in point.items() if k != "decisions"},
                    "rules": [s.label() for s in result.space.steps(d)],
                    "exact": bool(result.space.is_exact(d)),
                    "deviation": cand.deviation if cand is not None else None,
                    "fidelity": _fidelity(cand),
                    "predicted_fidelity": result.fmodel.predict(d)[0] if result.fmodel is not None else None,
                    "chosen": d == best})
    if best is not None and not any(p["chosen"] for p in out):
        # Thinned out of the front, or dominated in (latency, memory) by a variant that failed the
        # fidelity budget: shown anyway, marked, with its id on the latency / fidelity front when it has one.
        b = result.best
        dominated = any(p["latency_us"] <= b.figures["latency_us"] and p["memory_bytes"] <= b.figures["memory_bytes"]
                        and (p["latency_us"], p["memory_bytes"]) != (b.figures["latency_us"], b.figures["memory_bytes"])
                        for p in out)
        out.append({"id": b.id or "best", "latency_us": b.figures["latency_us"],
                    "memory_bytes": b.figures["memory_bytes"], "params": b.figures["params"],
                    "rules": [s.label() for s in b.steps], "exact": b.exact, "deviation": b.deviation,
                    "fidelity": _fidelity(b), "predicted_fidelity": b.predicted, "chosen": True,
                    "dominated": dominated})
        out.sort(key=lambda p: p["memory_bytes"])
    return out


def _fidelity(cand) -> float | None:
    """A materialised variant's verified task fidelity (None: not materialised, or non-finite)."""
    if cand is None or cand.fidelity is None or not cand.fidelity.finite:
        return None
    return float(cand.fidelity.value)


def nothing_to_do(result: OptimizeResult) -> list[str]:
    """Why the chosen variant is the original, per rule of the rule set (empty when something helps)."""
    if result.best is None or result.best.steps:
        return []
    space = result.space
    reasons = []
    alone = {row.label.removesuffix(" alone"): row for row in result.rows}
    for rule in space.config.rules:
        sites = [v.id for v in space.variables if any(o.choice is not None and o.choice.rule == rule
                                                      for o in v.options)]
        if not sites:
            reasons.append(f"{rule}: no site in this model")
        elif rule in alone and not alone[rule].steps:
            reasons.append(f"{rule}: slower or no faster at each of its {len(sites)} site(s) on "
                           f"{result.target.name} (estimated)")
        else:
            reasons.append(f"{rule}: helps alone but not within the budgets")
    if not space.config.rules:
        reasons.append("the rule set searches no rule")
    return reasons


def provenance(result: OptimizeResult) -> dict[str, Any]:
    cost = result.vm.cost
    out: dict[str, Any] = {"cost_model": cost.name, "fallback_kernels": [], "card": None}
    estimator = getattr(cost, "estimator", None)
    if estimator is None:
        out["note"] = "kernels scored by the target's measurement backend itself (no estimator error)"
        return out
    seen = set()
    for row in result.rows:
        for kernel in result.vm.kernels(row.decisions):
            if kernel is not None and kernel not in seen and not estimator.scorable(kernel):
                seen.add(kernel)
                out["fallback_kernels"].append(kernel.describe())
    out["card"] = card_summary(estimator.folder)
    return out


def card_summary(folder) -> dict[str, Any] | None:
    """The estimator card's held-out figures (None when the folder has no card)."""
    if folder is None or not (folder / "card.json").is_file():
        return None
    card = json.loads((folder / "card.json").read_text())
    acc = card.get("accuracy") or {}
    return {"heldout_models": acc.get("heldout_models"), "median_abs_error_pct": acc.get("median_abs_error_pct"),
            "within_5pct": acc.get("within_5pct"), "within_10pct": acc.get("within_10pct"),
            "kernel_median_rel_error_pct": acc.get("heldout_kernels_latency_median_rel_error_pct"),
            "ground_truth": acc.get("ground_truth"), "measured_on": acc.get("measured_on"),
            "real_exports": _real_exports(card.get("interval_coverage") or {}),
            "card": str(folder / "CARD.md")}


def _real_exports(coverage: dict[str, Any]) -> dict[str, Any] | None:
    """How the estimate compared on real exports no kernel of which was measured (the card's interval
    coverage): how many, how many within +-10%, the median error."""
    rows = [m for m in coverage.get("models") or [] if m.get("measured_us")]
    if not rows:
        return None
    errors = np.abs([m["estimate_us"] / m["measured_us"] - 1.0 for m in rows])
    return {"models": len(rows), "within_10pct": int((errors <= 0.10).sum()),
            "median_abs_error_pct": 100 * float(np.median(errors))}


def extra(result: OptimizeResult) -> dict[str, Any]:
    """The report fields this module adds to the optimize JSON document."""
    out: dict[str, Any] = {"pareto": pareto(result), "nothing_to_do": nothing_to_do(result),
                           "provenance": provenance(result),
                           "timeline": {"baseline": timeline(result, result.rows[0].decisions)}}
    if result.best is not None:
        out["timeline"]["best"] = timeline(result, result.best.decisions)
    return out
