"""Rendering results: rich tables for people, plain dicts for ``--json``."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from hwopt.rewrites.apply import ApplyResult
from hwopt.canonical.canonicalize import CanonicalizationReport
from hwopt.fidelity.metrics import METRICS, Fidelity
from hwopt.analysis.metrics import ModelMetrics
from hwopt.rewrites import RULES
from hwopt.analysis.sites import Analysis
from hwopt.fidelity.verify import Comparison


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GiB"


def human_count(count: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(int(count))


def human_latency(us: float) -> str:
    """A latency in microseconds: ms from 1 ms up, else us."""
    return f"{us / 1000:.3f} ms" if abs(us) >= 1000 else f"{us:.1f} us"


def applicable_rules(analysis: Analysis) -> dict[str, list[str]]:
    """Site id -> names of the rules that apply there with default parameters."""
    found: dict[str, list[str]] = {site_id: [] for site_id in analysis.sites}
    for rule in RULES.values():
        params = rule.parse_params({})
        for site in rule.find_sites(analysis):
            if rule.check(site, params, analysis) is None:
                found[site.id].append(rule.name)
    return found


def print_inspect(console: Console, analysis: Analysis, metrics: ModelMetrics, canon: CanonicalizationReport) -> None:
    console.print(
        f"[bold]{metrics.nodes}[/] nodes, [bold]{human_count(metrics.params)}[/] params "
        f"({human_bytes(metrics.param_bytes)}), [bold]{human_count(metrics.flops)}[/] FLOPs/sample, "
        f"peak activations [bold]{human_bytes(metrics.peak_activation_bytes)}[/]/sample"
    )
    from hwopt.estimator.memory import FILE_BASIS

    console.print(f"  (memory {FILE_BASIS}; hwopt estimate/optimize count the target's layout instead)",
                  highlight=False)
    console.print(
        f"canonicalised: {canon.nodes_before} -> {canon.nodes_after} nodes "
        f"(BatchNorm folded {canon.removed('BatchNormalization')}, Constant folded {canon.removed('Constant')}, "
        f"Identity removed {canon.removed('Identity')}) in {canon.seconds:.2f} s, "
        f"verified exact (rel. max-abs error {canon.max_rel_error:.1e})"
    )
    for note in canon.notes:
        console.print(f"canonicalised: {note}")
    ops = Table(title="ops", show_edge=False)
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, count in metrics.ops.most_common():
        ops.add_row(op, str(count))
    console.print(ops)
    rules = applicable_rules(analysis)
    sites = Table(title="sites", show_edge=False)
    for column in ("id", "kind", "where", "shape", "rules that apply"):
        # Ids are typed back into --rule X@ID: wrapped, never cut with an ellipsis.
        sites.add_column(column, overflow="fold")
    for site in analysis.sites.values():
        sites.add_row(site.id, site.kind, _where(site), site.describe(), ", ".join(rules[site.id]) or
                      _why_not(site))
    console.print(sites)


def _where(site) -> str:
    target = site.target
    if site.kind == "ibn":
        return target.depthwise.name
    if site.kind == "dw":
        return target.node.name + (f" ({target.block})" if target.block else "")
    if site.kind == "ch":
        return target.producers[0].name
    return target.node.name  # prelu, pad: one node


def _why_not(site) -> str:
    if site.kind == "ch" and site.target.blockers:
        return f"- (fixed by {site.target.blockers[0]})"
    return "-"


def inspect_dict(analysis: Analysis, metrics: ModelMetrics, canon: CanonicalizationReport) -> dict[str, Any]:
    rules = applicable_rules(analysis)
    from hwopt.estimator.memory import FILE_BASIS

    return {
        "metrics": metrics.to_dict(),
        "memory_basis": FILE_BASIS,
        "canonicalization": {
            "nodes_before": canon.nodes_before,
            "nodes_after": canon.nodes_after,
            "batchnorm_folded": canon.removed("BatchNormalization"),
            "constant_folded": canon.removed("Constant"),
            "identity_removed": canon.removed("Identity"),
            "max_rel_error": canon.max_rel_error,
            "seconds": canon.seconds,
            "notes": canon.notes,
        },
        "sites": [
            {"id": s.id, "kind": s.kind, "where": _where(s), "shape": s.describe(), "rules": rules[s.id],
             **({"fixed_by": s.target.blockers} if s.kind == "ch" and s.target.blockers else {})}
            for s in analysis.sites.values()
        ],
    }


def print_rules(console: Console) -> None:
    table = Table(show_edge=False)
    for column in ("rule", "sites", "exact", "parameters", "what it does"):
        table.add_column(column)
    for rule in RULES.values():
        defaults = rule.parse_params({})
        exact = "yes" if rule.is_exact(defaults) else "no"
        if rule.name == "align-channels":
            exact = "pad: yes, trim: no"
        table.add_row(rule.name, rule.site_kind, exact, "\n".join(p.describe() for p in rule.params) or "-",
                      rule.summary)
    console.print(table)


def _comparison_line(comparison: Comparison) -> str:
    parts = []
    for out in comparison.outputs:
        text = f"{out.name}: rel L2 {out.rel_l2:.2e}, cosine {out.cosine:.4f}, rel max-abs {out.rel_max_abs_err:.1e}"
        if out.top1_agreement is not None:
            text += f", top-1 agreement {out.top1_agreement:.0%}"
        parts.append(text)
    return "; ".join(parts)


def print_apply(console: Console, result: ApplyResult) -> None:
    for step in result.steps:
        kind = "exact" if step.exact else "INEXACT"
        console.print(f"[bold]{step.step.label()}[/] ({kind}): {len(step.applied)} site(s) in {step.seconds:.1f} s")
        for outcome in step.applied:
            console.print(f"  {outcome.site}: {outcome.detail}")
        for site_id, reason in step.skipped:
            console.print(f"  [dim]{site_id}: skipped, {reason}[/]")
        if step.comparison is not None:
            verdict = "verified exact" if step.exact else "deviation"
            console.print(f"  {verdict}: {_comparison_line(step.comparison)}")
    table = Table(title="before / after", show_edge=False)
    for column in ("", "before", "after", "change"):
        table.add_column(column, justify="right")
    for label, key, fmt in (("params", "params", human_count), ("FLOPs/sample", "flops", human_count),
                            ("peak activations", "peak_activation_bytes", human_bytes), ("nodes", "nodes", str)):
        a, b = getattr(result.before, key), getattr(result.after, key)
        change = f"{(b - a) / a:+.1%}" if a else "-"
        table.add_row(label, fmt(a), fmt(b), change)
    console.print(table)
    if result.final is not None:
        verdict = "exact" if result.exact and result.final.exact else "INEXACT"
        console.print(f"final vs original ({verdict}, {result.final.samples} samples): {_comparison_line(result.final)}")
    if result.fidelity is not None:
        console.print(fidelity_line(result.fidelity), markup=False, highlight=False)


def fidelity_line(fid: Fidelity) -> str:
    """'task fidelity: top-1 agreement 97.0%, rel L2 0.12 (64 held-out samples)'."""
    metric = METRICS[fid.metric]
    value = f"{fid.value:.1%}" if math.isfinite(fid.value) else "NaN (non-finite outputs)"
    return (f"task fidelity vs the original: {metric.label} {value}, rel L2 {fid.rel_l2:.4g} "
            f"({fid.samples} held-out samples, {fid.metric})")


def apply_dict(result: ApplyResult) -> dict[str, Any]:
    return {
        "exact": result.exact,
        "before": result.before.to_dict(),
        "after": result.after.to_dict(),
        "steps": [
            {
                "rule": s.step.rule,
                "params": s.step.params,
                "sites": s.step.sites,
                "exact": s.exact,
                "applied": [{"site": o.site, "detail": o.detail, **o.figures} for o in s.applied],
                "skipped": [{"site": site, "reason": why} for site, why in s.skipped],
                "comparison": s.comparison.to_dict() if s.comparison else None,
                "seconds": s.seconds,
            }
            for s in result.steps
        ],
        "final": result.final.to_dict() if result.final else None,
        "fidelity": result.fidelity.to_dict() if result.fidelity else None,
    }


def growth_note(doc: dict[str, Any]) -> str | None:
    """One line when the chosen model holds more parameters or memory than the original (speed bought with
    weights: a grouped or dense conv holds more than the depthwise one it replaces)."""
    best, base = doc.get("best"), (doc.get("variants") or [None])[0]
    if not best or not base:
        return None
    grown = []  # what grows by half a percent or more (a padded channel's few bytes are no news)
    if best["params"] > 1.005 * base["params"]:
        grown.append(f"parameters {human_count(base['params'])} -> {human_count(best['params'])} "
                     f"({best['params'] / base['params'] - 1:+.0%})")
    if best["memory_bytes"] > 1.005 * base["memory_bytes"]:
        grown.append(f"memory {human_bytes(base['memory_bytes'])} -> {human_bytes(best['memory_bytes'])} "
                     f"({best['memory_bytes'] / base['memory_bytes'] - 1:+.0%})")
    if not grown:
        return None
    return ("the chosen model is larger than the original: " + ", ".join(grown)
            + " (its rewrites trade weights for speed; --max-memory bounds it)")
