"""Self-contained HTML reports (``--report FILE.html``), rendered from the commands' JSON documents.

One file, no script and no network: the charts are inline SVG (``hwopt.report.svg``),
so the page opens offline in any browser and stays small (tens of KB for a
300-node model). Why not Plotly or Vega-Lite: ``docs/report.md``.
"""

from __future__ import annotations

import math
import re
from html import escape
from pathlib import Path
from typing import Any, Callable

from hwopt import __version__
from hwopt.report.tables import growth_note, human_bytes, human_count, human_latency
from hwopt.report.svg import PALETTE, Point, Segment, grouped_bars, nice_ticks, scatter, stacked_bars

RULE_COLORS = {"fuse": "#f28e2b", "dense": "#4e79a7", "grouped": "#76b7b2", "dw": "#9aa5b1", "hidden": "#59a14f",
               "other": "#c9ced4"}
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#222;
line-height:1.4;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:30px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border-bottom:1px solid #e4e4e4;padding:4px 6px;
text-align:right;vertical-align:top}th{background:#f4f5f7;font-weight:600}td:first-child,th:first-child{text-align:left}
td{white-space:nowrap}td.text{text-align:left;max-width:340px;min-width:120px;word-break:break-word;white-space:normal}
span.band{font-size:11px;color:#666;font-weight:400}
tr.note-row td{white-space:normal;text-align:left;color:#555;font-size:12px;border-bottom:1px solid #e4e4e4;
padding-top:0}tr.has-note td{border-bottom:none}
.scroll{overflow-x:auto}tr.chosen td{background:#fff7e6;font-weight:600}
.meta{font-size:13px;color:#444}.meta td{text-align:left;border:none;padding:2px 10px 2px 0;white-space:normal}
.meta td:first-child{white-space:nowrap}th.text{text-align:left}
.warn{background:#fdecea;border-left:5px solid #c0392b;padding:8px 12px;margin:10px 0;font-weight:600}
.note{background:#eef4fb;border-left:5px solid #4e79a7;padding:8px 12px;margin:10px 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:18px}.small{font-size:12px;color:#555}
code{background:#f4f5f7;padding:1px 4px;border-radius:3px;font-size:12px}
"""


def fmt_us(v: float | None) -> str:
    return "-" if v is None else human_latency(v)


def fmt_axis_us(v: float) -> str:
    return f"{v / 1000:g} ms" if abs(v) >= 1000 else f"{v:g} us"


def axis_bytes(values: list[float]) -> tuple[Callable[[float], str], float]:
    """(tick label, unit) for byte values: one unit, as many decimals as a tick step needs."""
    hi = max((abs(v) for v in values if v is not None), default=1.0)
    unit, scale = next(((u, s) for u, s in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)) if hi >= s), ("B", 1))
    values = sorted(v / scale for v in values if v is not None)
    ticks = nice_ticks(values[0] * 0.95, values[-1] * 1.02, 5) if values else [0.0, 1.0]
    step = ticks[1] - ticks[0]
    decimals = max(0, min(3, -math.floor(math.log10(step)))) if step > 0 else 1
    return (lambda v: f"{v / scale:.{decimals}f} {unit}"), scale


def fmt_fid(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def fmt_band(low: float | None, high: float | None) -> str:
    """An 80% band in one unit: ``2.51-2.88 ms``, ``512-600 us``."""
    if low is None or high is None:
        return "-"
    if min(abs(low), abs(high)) >= 1000:
        return f"{low / 1000:.2f}-{high / 1000:.2f} ms"
    return f"{low:.0f}-{high:.0f} us"


def fmt_dev(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4g}"


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None, table_id: str = "",
           text_cols: tuple[int, ...] = (), notes: list[str] | None = None) -> str:
    """``notes``: HTML shown under a row across the whole table (a long note in a column of its own made the
    table wider than the page and its rows tall)."""
    heads = "".join(f'<th{" class=text" if j in text_cols else ""}>{escape(h)}</th>' for j, h in enumerate(header))
    out = [f'<div class="scroll"><table id="{table_id}"><thead><tr>{heads}</tr></thead><tbody>']
    for i, row in enumerate(rows):
        note = notes[i] if notes else ""
        names = " ".join(c for c in ((classes[i] if classes else ""), "has-note" if note else "") if c)
        cls = f' class="{names}"' if names else ""
        out.append(f"<tr{cls}>" + "".join(f'<td{" class=text" if j in text_cols else ""}>{cell}</td>'
                                          for j, cell in enumerate(row)) + "</tr>")
        if note:
            out.append(f'<tr class="note-row"><td colspan="{len(header)}">{note}</td></tr>')
    out.append("</tbody></table></div>")
    return "".join(out)


def page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body)
            + f'<p class="small">Written by hwopt {escape(__version__)}. Self-contained: no script, no network.</p>'
            + "</body></html>\n")


def _meta(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><td><b>{escape(k)}</b></td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="meta">{cells}</table>'


def _inputs_banner(inputs: dict[str, Any] | None, exact: bool = False) -> str:
    """Random inputs said loudly; softer when every variant is exact (nothing was refit on them)."""
    if not inputs:
        return ""
    if inputs.get("random") and exact:
        return ('<div class="note" id="random-inputs">Input data: RANDOM (standard normal) inputs, not real samples. '
                'Every rewrite here is exact, verified on them; inexact rewrites would need '
                '<code>--calibration FILE.npz</code> with real samples.</div>')
    if inputs.get("random"):
        return ('<div class="warn" id="random-inputs">Input data: RANDOM (standard normal) inputs, not real samples. '
                'Refitted weights and every deviation below hold for noise only; give '
                '<code>--calibration FILE.npz</code> with real samples for figures that hold on real data.</div>')
    return f'<div class="note">Input data: {escape(str(inputs.get("calibration")))}</div>'


# -- fidelity: whatever task-level figures the document carries ------------------------------------------------
_KNOWN = {"label", "latency_us", "latency_change", "measured_latency_us", "params", "flops", "peak_activation_bytes",
          "memory_bytes", "deviation", "exact", "rules", "note", "id", "chosen", "decisions", "dominated", "verified",
          "fidelity", "predicted_fidelity", "predicted_rel_l2", "latency_low_us", "latency_high_us", "interval",
          "rel_l2", "memory_charge_us", "fidelity_lower_bound"}
# rel_l2: the deviation again (the verifier's name for it), shown once; memory_charge_us: part of the latency
# (the timeline shows it), not a fidelity figure; fidelity_lower_bound: under the fidelity, in its cell


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fidelity_label(doc: dict[str, Any]) -> str:
    fid = doc.get("fidelity")
    return str(fid.get("label") or "fidelity") if isinstance(fid, dict) else "fidelity"


def fidelity_fields(row: dict[str, Any], label: str = "fidelity") -> dict[str, float]:
    """Task-level figures of a variant: its ``fidelity`` (a number, or an object of numbers), the prediction
    when not verified, and any other numeric field not known here."""
    out: dict[str, float] = {}
    fid = row.get("fidelity")
    if isinstance(fid, dict):
        out.update({k: v for k, v in fid.items() if _number(v)})
    elif _number(fid):
        out[label] = fid
    if not _number(fid) and _number(row.get("predicted_fidelity")):
        out[f"{label} (predicted)"] = row["predicted_fidelity"]
    for k, v in row.items():
        if k not in _KNOWN and _number(v):
            out[k] = v
    return out


def _fidelity_axis(doc: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[str, Callable[[dict], float | None],
                                                                                  bool, float | None]:
    """(axis name, getter, higher is better, budget) for the latency-vs-fidelity chart: the task fidelity when
    the document has one (verified, else predicted), else the output deviation."""
    label = fidelity_label(doc)
    if any(_number(r.get("fidelity")) or _number(r.get("predicted_fidelity")) for r in rows):
        fid = doc.get("fidelity") if isinstance(doc.get("fidelity"), dict) else {}
        return (f"{label} (higher is better)",
                lambda r: r.get("fidelity") if _number(r.get("fidelity")) else r.get("predicted_fidelity"),
                True, fid.get("min_fidelity"))
    return ("output deviation (rel L2, lower is better)", lambda r: r.get("deviation"), False,
            doc.get("budgets", {}).get("max_deviation"))


def _rules_short(rules: list[str]) -> str:
    from hwopt.report.optimize import rules_short

    return rules_short(rules)


# -- optimize -----------------------------------------------------------------------------------------------
def _segment_color(seg: dict[str, Any]) -> str:
    if seg["label"] == "other":
        return RULE_COLORS["other"]
    rule = seg.get("rule", "")
    for key in ("fuse", "dense"):
        if rule.startswith(key):
            return RULE_COLORS[key]
    if re.match(r"g\d+", rule):  # dw-to-grouped's option label: gN, N channels per group
        return RULE_COLORS["grouped"]
    return RULE_COLORS["hidden"] if "hidden" in rule else RULE_COLORS["dw"]


def _timeline_chart(doc: dict[str, Any]) -> str:
    rows = []
    for name, key in (("baseline", "baseline"), ("best", "best")):
        segs = doc.get("timeline", {}).get(key)
        if not segs:
            continue
        rows.append((name, [Segment(s["latency_us"], _segment_color(s),
                                    label=s["label"] if s["label"] != "other" else "",
                                    title=f"{s['label']}: {fmt_us(s['latency_us'])}, {s.get('rule') or 'as is'}, "
                                          f"{s['kernels']} kernel(s)",
                                    data={"label": s["label"], "rule": s.get("rule", "")}) for s in segs]))
    legend = [("as is", RULE_COLORS["dw"]), ("fused (fuse-ibn)", RULE_COLORS["fuse"]),
              ("dense (dw-to-dense)", RULE_COLORS["dense"]), ("grouped (dw-to-grouped)", RULE_COLORS["grouped"]),
              ("resized only", RULE_COLORS["hidden"]), ("between blocks", RULE_COLORS["other"])]
    return stacked_bars(rows, f"estimated latency on {doc['target']} (kernels in schedule order)", fmt_axis_us,
                        legend=legend, chart_id="chart-timeline", fmt_total=fmt_us)


def block_totals(segments: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Block -> its latency and utilisation limit summed over its segments, in first-seen order.

    A block's kernels need not run back to back (a detector's branches interleave with it), so the
    timeline can hold several segments of one block; the per-block figures are their sums, as in the
    per-block table."""
    out: dict[str, dict[str, Any]] = {}
    for seg in segments:
        if seg["label"] == "other":
            continue
        total = out.setdefault(seg["label"], {"label": seg["label"], "rule": seg.get("rule", ""), "latency_us": 0.0,
                                              "ideal_us": 0.0 if seg.get("ideal_us") is not None else None})
        total["latency_us"] += seg["latency_us"]
        if total["ideal_us"] is not None and seg.get("ideal_us") is not None:
            total["ideal_us"] += seg["ideal_us"]
    return out


def _blocks_chart(doc: dict[str, Any]) -> str:
    """Each block's latency before and after, side by side: where a rule wins and where it loses."""
    base = block_totals(doc.get("timeline", {}).get("baseline", []))
    best = block_totals(doc.get("timeline", {}).get("best", []))
    if not base or not best:
        return ""
    groups = [(label, [("baseline", s["latency_us"], RULE_COLORS["dw"]),
                       (f"best ({best[label].get('rule') or 'as is'})" if label in best else "best",
                        best[label]["latency_us"] if label in best else None,
                        _segment_color(best[label]) if label in best else RULE_COLORS["dw"])])
              for label, s in base.items()]
    return grouped_bars(groups, "estimated latency per block: baseline (grey) and best (coloured by its rule)",
                        fmt_us, chart_id="chart-blocks", legend=False)


def _utilisation_chart(doc: dict[str, Any]) -> str:
    base = block_totals(doc.get("timeline", {}).get("baseline", []))
    best = block_totals(doc.get("timeline", {}).get("best", []))
    if not base or next(iter(base.values()))["ideal_us"] is None:
        return (f'<p class="note">The target {escape(doc["target"])} states no clock (<code>clock_mhz</code>): its '
                f'utilisation limit is not defined.</p>')

    def share(s: dict | None) -> float | None:
        return 100.0 * s["ideal_us"] / s["latency_us"] if s and s["ideal_us"] is not None and s["latency_us"] > 0 \
            else None

    # Segments without MACs (the off-chip memory charge) have no utilisation: not a row of this chart.
    groups = [(label, [("baseline", share(s), RULE_COLORS["dw"]),
                       ("best", share(best.get(label)), RULE_COLORS["fuse"])]) for label, s in base.items()
              if s["ideal_us"] is not None]
    p = doc["parallelism"]
    return (f'<p class="small">Per block: the utilisation limit (MACs / ({p}x{p}) cycles: the array busy every cycle) '
            f'as a share of the estimated latency. 100% = at the array\'s peak; low = bound by memory, the vector '
            f'unit or depthwise work the array cannot fill. MACs are each variant\'s own: a dense conv does more '
            f'multiply-accumulates than the depthwise one it replaces, so its share rises with its work.</p>'
            + grouped_bars(groups, "share of the utilisation limit (%)", lambda v: f"{v:.0f}%",
                           chart_id="chart-utilisation", limit=100.0))


def chosen_label(row: dict[str, Any]) -> str:
    """The chosen point's label on both charts: its id (the one ``--pick`` takes), marked."""
    ident = row.get("id")
    return f"{ident} (chosen)" if ident and ident != "best" else "chosen"


def id_ranges(ids: list[str]) -> str:
    """``p1-p12, p15``: runs of consecutive ids written as ranges."""
    numbers = sorted(int(i[1:]) for i in ids if i[:1] == "p" and i[1:].isdigit())
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    parts = [f"p{r[0]}" + (f"-p{r[-1]}" if len(r) > 1 else "") for r in runs]
    return ", ".join(parts + [i for i in ids if not (i[:1] == "p" and i[1:].isdigit())])


def why_dominated(doc: dict[str, Any]) -> str | None:
    """Why the chosen variant is not on the latency / memory front: the points that dominate it miss the
    fidelity budget (the front shows every evaluated variant; only those within the budget may be written)."""
    pareto = doc.get("pareto") or []
    chosen = next((p for p in pareto if p.get("chosen")), None)
    if chosen is None or not chosen.get("dominated"):
        return None
    better = [p for p in pareto if p is not chosen and p["latency_us"] <= chosen["latency_us"]
              and p["memory_bytes"] <= chosen["memory_bytes"]]
    if not better:
        return None
    fid = doc.get("fidelity") if isinstance(doc.get("fidelity"), dict) else {}
    ids = id_ranges([p["id"] for p in better])
    values = [p["fidelity"] if p.get("fidelity") is not None else p.get("predicted_fidelity") for p in better]
    values = [v for v in values if v is not None]
    are = "is" if len(better) == 1 else "are"
    named = f" ({chosen['id']})" if chosen.get("id") and chosen["id"] != "best" else ""
    if fid.get("min_fidelity") is not None and values:
        return (f"the chosen variant{named} is not on this front: {ids} {are} faster and smaller but miss the "
                f"fidelity budget ({fid.get('label', 'fidelity')} at most {fmt_fid(max(values))}, predicted where not "
                f"verified, against --min-fidelity {fmt_fid(fid['min_fidelity'])}): see the right-hand chart")
    return (f"the chosen variant{named} is not on this front: {ids} {are} faster and smaller but miss the "
            f"fidelity budget (see the right-hand chart)")


def _pareto_charts(doc: dict[str, Any]) -> str:
    pareto = doc.get("pareto") or []
    budgets = doc.get("budgets", {})
    why = why_dominated(doc)
    pts = [Point(p["latency_us"], p["memory_bytes"],
                 label=chosen_label(p) if p.get("chosen") else (p["id"] if len(pareto) <= 12 else ""),
                 title=f"{p['id']}: {fmt_us(p['latency_us'])}, {human_bytes(p['memory_bytes'])}, "
                       f"{_rules_short(p.get('rules', []))}" + (f" (chosen; {why})" if p.get("chosen") and why
                                                                 else " (chosen)" if p.get("chosen") else ""),
                 color="#f28e2b" if p.get("chosen") else "#4e79a7", chosen=bool(p.get("chosen")),
                 front=not p.get("dominated", False), data={"id": p["id"]}) for p in pareto]
    seen = {(p.x, p.y) for p in pts}
    for v in doc.get("variants", []):
        if v["label"] in ("best",) or (v["latency_us"], v["memory_bytes"]) in seen:
            continue
        pts.append(Point(v["latency_us"], v["memory_bytes"], label=v["label"], color="#9aa5b1",
                         title=f"{v['label']}: {fmt_us(v['latency_us'])}, {human_bytes(v['memory_bytes'])}"))
    ybytes = [p.y for p in pts] + ([budgets["max_memory_bytes"]] if budgets.get("max_memory_bytes") else [])
    yfmt, yunit = axis_bytes(ybytes)
    left = scatter(pts, "estimated latency", "memory (params + peak activations)", fmt_axis_us, yfmt, y_unit=yunit,
                   x_budget=budgets.get("max_latency_us"), y_budget=budgets.get("max_memory_bytes"),
                   budget_names=("--max-latency", "--max-memory"), chart_id="chart-pareto-memory")
    if why:
        left += f'<p class="small" id="pareto-why">{escape(why[0].upper() + why[1:])}.</p>'
    # Latency against fidelity: every materialised variant (the side-by-side rows, finalists, front points).
    # Each shows by its id where it has one (the ids --pick takes); the chosen one, wherever it appears,
    # is ringed and labelled with its id.
    rows = [dict(v, id=v.get("id") or v["label"], chosen=v["label"] == "best") for v in doc.get("variants", [])]
    rows += [dict(f, id=f.get("id") or f["label"]) for f in doc.get("finalists", [])
             if f["label"] not in {r["label"] for r in rows}]
    rows += [dict(f, id=f.get("id") or f["label"]) for f in doc.get("front", [])]  # a latency / fidelity front
    rows += [p for p in pareto if p.get("deviation") is not None]
    chosen_id = next((r["id"] for r in rows if r.get("chosen")), None)
    name, get, higher, budget = _fidelity_axis(doc, rows)
    fpts: dict[tuple[float, float], Point] = {}
    names: dict[tuple[float, float], list[str]] = {}
    for r in rows:
        value = get(r)
        if value is None:
            continue
        chosen = bool(r.get("chosen")) or r["id"] == chosen_id
        key = (round(r["latency_us"], 6), value)
        names.setdefault(key, [])
        if r["id"] not in names[key]:
            names[key].append(r["id"])  # one point, several names (a rule alone that is also the chosen one)
        point = fpts.setdefault(key, Point(r["latency_us"], value, label=r["id"]))
        if chosen and not point.chosen:
            point.chosen, point.label = True, chosen_label(r)
    for key, point in fpts.items():
        point.color = "#f28e2b" if point.chosen else "#4e79a7"
        point.title = f"{' = '.join(names[key])}: {fmt_us(point.x)}, {name} {fmt_dev(point.y)}"
    fpts = list(fpts.values())
    # The front: no other point both faster and at least as faithful.
    for p in fpts:
        p.front = not any(q is not p and q.x <= p.x and ((q.y >= p.y) if higher else (q.y <= p.y))
                          and (q.x, q.y) != (p.x, p.y) for q in fpts)
    positive = [p.y for p in fpts if p.y > 0]
    log_y = not higher and len(positive) == len(fpts) and positive and max(positive) / min(positive) > 100
    right = scatter(fpts, "estimated latency", name, fmt_axis_us, fmt_dev, y_budget=budget,
                    y_max=1.0 if higher and all(p.y <= 1.0 for p in fpts) else None,
                    budget_names=("", "--min-fidelity" if higher else "--max-deviation"),
                    chart_id="chart-pareto-fidelity", log_y=bool(log_y))
    return f'<div class="pair"><div>{left}</div><div>{right}</div></div>'


def _cell(v: dict[str, Any], key: str, fmt: Callable[[float], str]) -> str:
    return fmt(v[key]) if v.get(key) is not None else "-"


def _fidelity_cell(row: dict[str, Any], value: float | None) -> str:
    """The verified fidelity, with the one-sided 95% lower bound it is admitted on beneath it (the claim)."""
    bound = row.get("fidelity_lower_bound")
    return fmt_fid(value) + (f'<br><span class="band" title="one-sided 95% lower confidence bound over the '
                             f'independent held-out samples: the claim">&ge; {fmt_fid(bound)}</span>'
                             if _number(bound) else "")


def _variants_table(doc: dict[str, Any]) -> str:
    """Baseline, each rule alone, the chosen variant, then the finalists not already among them; a row's note
    under it across the table."""
    variants = list(doc["variants"])
    extra = [f for f in doc.get("finalists", []) if f["label"] != "best"
             and not any(f["latency_us"] == v["latency_us"] and f["rules"] == v["rules"] for v in variants)]
    label = fidelity_label(doc)
    fid_names = list(dict.fromkeys(k for v in variants + extra for k in fidelity_fields(v, label)))
    measured = any(v.get("measured_latency_us") is not None for v in variants)
    banded = any(v.get("latency_low_us") is not None for v in variants)
    header = (["variant", "est. latency" + (" (80% band)" if banded else ""), "vs baseline"]
              + (["measured"] if measured else [])
              + ["params", "FLOPs", "peak act.", "memory", "rel L2 (deviation)"] + fid_names + ["exact", "rules"])
    base = variants[0]["latency_us"] if variants else 1.0
    rows, classes, notes = [], [], []
    for v in variants + extra:
        fid = fidelity_fields(v, label)
        name = v["label"] + (f" ({v['id']})" if v.get("id") else "")
        deviation = v.get("deviation") if v.get("deviation") is not None else v.get("rel_l2")
        band = (f'<br><span class="band">{fmt_band(v.get("latency_low_us"), v.get("latency_high_us"))}</span>'
                if banded and v.get("latency_low_us") is not None else "")
        rows.append([escape(name), fmt_us(v["latency_us"]) + band, f"{v['latency_us'] / base - 1:+.1%}"]
                    + ([fmt_us(v.get("measured_latency_us"))] if measured else [])
                    + [_cell(v, "params", human_count), _cell(v, "flops", human_count),
                       _cell(v, "peak_activation_bytes", human_bytes), _cell(v, "memory_bytes", human_bytes),
                       fmt_dev(deviation)]
                    + [_fidelity_cell(v, fid.get(k)) if k == label else fmt_fid(fid.get(k)) if k.startswith(label)
                       else fmt_dev(fid.get(k)) for k in fid_names]
                    + [("yes" if v.get("exact") else "no") if "exact" in v else "-",
                       escape(_rules_short(v.get("rules", [])))])
        classes.append("chosen" if v["label"] == "best" else "")
        notes.append(escape(v.get("note") or ""))
    return _table(header, rows, classes, "table-variants", text_cols=(len(header) - 1,), notes=notes)


def _recovery_table(rows: list[dict]) -> str:
    """Recovery rows; with labels, task accuracy (against the labels, held-out split) of the original and of
    the variant before and after, beside the agreement with the original."""
    labelled = any(r.get("accuracy") for r in rows)
    head = ["variant", "metric", "before", "after", "epochs", "time", "meets the budgets"]
    if labelled:
        head[4:4] = ["accuracy: original", "accuracy: before", "accuracy: after"]
    body = []
    for r in rows:
        row = [escape(str(r.get("label"))), escape(str(r.get("metric"))), fmt_fid(r.get("before")),
               fmt_fid(r.get("after")), str(r.get("epochs")), f"{r.get('seconds', 0):.0f} s",
               "yes" if r.get("meets_budgets") else "no"]
        if labelled:
            acc = r.get("accuracy") or {}
            row[4:4] = [fmt_fid(acc.get("original")), fmt_fid(acc.get("before")), fmt_fid(acc.get("after"))]
        body.append(row)
    title = "Recovery (fine-tuned with the labels and distillation from the original)" if labelled else \
        "Recovery (distillation from the original)"
    return f"<h2>{title}</h2>" + _table(head, body, table_id="table-recovery")


def optimize_html(doc: dict[str, Any]) -> str:
    run = doc.get("run") or {}
    body = [f"<h1>hwopt optimize: {escape(Path(doc['model']).name)} on {escape(doc['target'])}</h1>"]
    budgets = ", ".join(f"{k}: {v}" for k, v in doc["budgets"].items() if v is not None) or "none"
    body.append(_meta([
        ("command", f"<code>{escape(run.get('command', '-'))}</code>"),
        ("model", escape(doc["model"])),
        ("target", f"{escape(doc['target'])} (P={doc['parallelism']}"
                   + (f", {escape(doc['hardware_class'])}" if doc.get("hardware_class") else "")
                   + f"), cost model {escape(doc['cost_model'])}"),
        ("budgets", escape(budgets)),
        ("written to", escape(doc["output"]) if doc.get("output") else "<b>no model written</b>"),
        ("rule set", escape(str(doc["space"].get("rule_set", "")))),
        ("search", f"{escape(doc['strategy'])}, {doc['evaluated']:,} of {doc['space']['size']:,} variants evaluated"),
        ("stages", escape(", ".join(f"{k} {v:.1f} s" for k, v in doc["seconds"].items()))),
        ("memory figures", "counted in the " + escape(doc.get("memory_basis", "target's layout"))),
    ]))
    exact = all(v.get("exact") for v in doc["variants"] + list(doc.get("finalists", [])) if "exact" in v)
    body.append(_inputs_banner(run.get("inputs"), exact))
    fid = doc.get("fidelity") or {}
    for key, css in (("claim", "note"), ("independence_warning", "warn"), ("unprovable", "warn")):
        if fid.get(key):  # the statistics behind the fidelity figures (docs/optimize.md)
            body.append(f'<div class="{css}" id="fidelity-{key.replace("_", "-")}">Fidelity {key.replace("_", " ")}: '
                        f'{escape(fid[key])}</div>')
    for line in doc.get("failure", []):
        body.append(f'<div class="warn">No variant meets the budgets: {escape(line)}</div>')
    if doc.get("nothing_to_do"):
        body.append('<div class="warn" id="nothing-to-do">Nothing to do: the original is the best variant. '
                    + "; ".join(escape(x) for x in doc["nothing_to_do"]) + "</div>")
    growth = growth_note(doc)
    if growth:
        body.append(f'<div class="note" id="growth">{escape(growth[0].upper() + growth[1:])}.</div>')
    if doc.get("fine_tuning"):
        places = escape(", ".join(doc["fine_tuning"]))
        body.append(f'<div class="note">Needs fine-tuning (inexact rewrites): {places}</div>')
    body.append("<h2>Side by side</h2>" + _variants_table(doc))
    if doc.get("recovery"):
        body.append(_recovery_table(doc["recovery"]))
    if doc.get("timeline"):
        body.append("<h2>Where the time goes: per block, before and after</h2>"
                    '<p class="small">Each bar is a variant\'s kernels end to end on the target\'s time axis; a '
                    'segment is an IBN block (labelled, coloured by its chosen rule) or the kernels between blocks. '
                    'Hover for figures.</p>' + _timeline_chart(doc) + _blocks_chart(doc))
    if doc.get("blocks"):
        body.append(_table(["block", "decision", "before", "after", "change", "fine-tune"],
                           [[escape(b["block"]), escape(", ".join(b["choices"])), fmt_us(b["latency_before_us"]),
                             fmt_us(b["latency_after_us"]),
                             f"{b['latency_after_us'] / max(b['latency_before_us'], 1e-9) - 1:+.0%}",
                             "yes" if b["needs_fine_tuning"] else ""] for b in doc["blocks"]], table_id="table-blocks"))
    if doc.get("front"):
        label = fidelity_label(doc)
        body.append(f"<h2>Latency / {escape(label)} front</h2>" + _table(
            ["id", "est. latency", "vs baseline", f"{label} (verified)", f"{label} (predicted)", "exact", "rules"],
            [[escape(str(f.get("id") or f.get("label"))), fmt_us(f["latency_us"]), f"{f.get('latency_change', 0):+.1%}",
              fmt_fid(f.get("fidelity")), fmt_fid(f.get("predicted_fidelity")), "yes" if f.get("exact") else "no",
              escape(_rules_short(f.get("rules", [])))] for f in doc["front"]], table_id="table-front", text_cols=(6,)))
    if doc.get("pareto"):
        body.append("<h2>Pareto front</h2><p class=\"small\">Left: every non-dominated variant the search evaluated "
                    "(estimated latency vs memory), ids usable with <code>hwopt optimize --pick ID</code> (same model, "
                    "rule set, target and seed). Right: the materialised variants, latency vs fidelity. Ringed: the "
                    "chosen variant. Dashed: budgets.</p>" + _pareto_charts(doc))
        body.append(_table(["id", "est. latency", "memory", "params", "deviation", "exact", "rules"],
                           [[escape(p["id"]) + (" (chosen)" if p.get("chosen") else ""), fmt_us(p["latency_us"]),
                             human_bytes(p["memory_bytes"]), human_count(p["params"]), fmt_dev(p.get("deviation")),
                             "yes" if p.get("exact") else "no", escape(_rules_short(p.get("rules", [])))]
                            for p in doc["pareto"]], ["chosen" if p.get("chosen") else "" for p in doc["pareto"]],
                           "table-pareto", text_cols=(6,)))
    if doc.get("timeline"):
        body.append("<h2>Distance to the array's peak</h2>" + _utilisation_chart(doc))
    body.append("<h2>Estimator provenance</h2>" + provenance_html(doc.get("provenance") or {})
                + _band_html((doc.get("best") or {}).get("interval")))
    return page(f"hwopt optimize {Path(doc['model']).name}", body)


def _band_html(band: dict[str, Any] | None) -> str:
    """The chosen variant's 80% band and the kernels that widen it most."""
    if not band:
        return ""
    drivers = "; ".join(escape(str(d.get("kernel"))) + (" (outside the estimator's table)" if d.get("ood") else "")
                        for d in band.get("drivers", []))
    return (f"<p>The chosen variant's estimate has an 80% band of {fmt_us(band.get('low_us'))} - "
            f"{fmt_us(band.get('high_us'))}; {band.get('ood_kernels', 0)} kernel(s) lie outside the estimator's "
            f"table" + (f"; the widest: {drivers}" if drivers else "") + ".</p>")


def provenance_html(prov: dict[str, Any]) -> str:
    out = [f"<p>Kernels scored by: {escape(str(prov.get('cost_model', '-')))}.</p>"]
    if prov.get("note"):
        out.append(f"<p>{escape(prov['note'])}</p>")
    card = prov.get("card")
    if card:
        def pct(v):
            return "-" if v is None else f"{100 * v:.0f}%"
        if card.get("median_abs_error_pct") is not None:
            heldout = (f"measured {escape(str(card.get('measured_on')))}): on {card.get('heldout_models')} held-out "
                       f"models, median error {card['median_abs_error_pct']:.1f}%, {pct(card.get('within_5pct'))} "
                       f"within +-5%, {pct(card.get('within_10pct'))} within +-10% "
                       f"(ground truth: {escape(str(card.get('ground_truth')))})"
                       + (f"; per kernel, median error {card['kernel_median_rel_error_pct']:.1f}%"
                          if card.get("kernel_median_rel_error_pct") is not None else ""))
        else:
            heldout = "): held-out-family accuracy not measured"
        real = card.get("real_exports")
        if real:
            heldout += (f"; on {real['models']} real exports none of whose kernels was measured, "
                        f"{real['within_10pct']} within +-10%, median error {real['median_abs_error_pct']:.1f}%")
        out.append(f"<p>The estimator card (<code>{escape(card.get('card') or '')}</code>{heldout}.</p>")
    fallbacks = prov.get("fallback_kernels") or []
    out.append(f"<p>Kernels scored by the roofline fallback (outside the learned model): "
               f"{len(fallbacks)}{': ' + escape('; '.join(fallbacks)) if fallbacks else ''}.</p>")
    per_kernel = prov.get("per_kernel") or []
    if per_kernel:
        pts = [Point(k["measured_us"], k["estimated_us"], color=PALETTE[i % len(PALETTE)],
                     title=f"{k['kernel']}: estimated {fmt_us(k['estimated_us'])}, measured {fmt_us(k['measured_us'])}")
               for i, k in enumerate(per_kernel) if k["measured_us"] > 0 and k["estimated_us"] > 0]
        out.append(f"<p>Estimate against measurement, kernel by kernel ({escape(prov.get('measured_by', ''))}):</p>")
        out.append('<div class="pair"><div>' + scatter(pts, "measured", "estimated", fmt_axis_us, fmt_axis_us,
                                                       chart_id="chart-kernels") + "</div><div></div></div>")
        out.append(_table(["kernel", "estimated", "measured", "error"],
                          [[escape(k["kernel"]), fmt_us(k["estimated_us"]), fmt_us(k["measured_us"]),
                            f"{k['estimated_us'] / k['measured_us'] - 1:+.1%}" if k["measured_us"] else "-"]
                           for k in per_kernel], table_id="table-kernels"))
    return "".join(out)


# -- estimate, measure, apply ---------------------------------------------------------------------------------
def _kind_colors(kernels: list[dict[str, Any]]) -> dict[str, str]:
    return {kind: PALETTE[i % len(PALETTE)] for i, kind in enumerate(dict.fromkeys(k["kind"] for k in kernels))}


def _kernel_bar(kernels: list[dict[str, Any]], target: str) -> str:
    colors = _kind_colors(kernels)
    kinds = list(colors)
    segs = [Segment(k["latency_us"], colors[k["kind"]], title=f"{k['description']}: {fmt_us(k['latency_us'])}",
                    data={"kind": k["kind"]}) for k in kernels]
    return stacked_bars([("model", segs)], f"estimated latency on {target} (kernels in schedule order)", fmt_axis_us,
                        legend=[(k, colors[k]) for k in kinds], chart_id="chart-kernels-timeline", fmt_total=fmt_us)


def _onchip_rows(split: dict[str, Any] | None) -> list[tuple[str, str]]:
    """On-chip vs off-chip bytes under the target's memory budget, and the DRAM charge in the latency."""
    if not split:
        return []
    from hwopt.estimator.memory import describe_split

    return [("memory budget", escape(describe_split(split))), ("memory policy", escape(split.get("policy", "")))]


def estimate_html(doc: dict[str, Any]) -> str:
    kernels = doc.get("kernels", [])
    body = [f"<h1>hwopt estimate: {escape(Path(doc['model']).name)} on {escape(doc['target'])}</h1>",
            _meta([("command", f"<code>{escape((doc.get('run') or {}).get('command', '-'))}</code>"),
                   ("latency", fmt_us(doc["latency_us"])),
                   ("parameters", human_bytes(doc["param_bytes"])),
                   ("peak activations", human_bytes(doc["peak_activation_bytes"])),
                   ("memory figures", "counted in the " + escape(doc.get("memory_basis", "target's layout"))),
                   ("off-chip traffic", human_bytes(doc["dram_bytes"]) if doc.get("dram_bytes") else "-"),
                   *_onchip_rows(doc.get("onchip"))])]
    body.append("<h2>Where the time goes</h2>" + _kernel_bar(kernels, doc["target"]))
    top = sorted(kernels, key=lambda k: -k["latency_us"])[:25]
    colors = _kind_colors(kernels)
    groups = [(f"#{kernels.index(k)} {k['kind']}", [("estimated latency", k["latency_us"], colors[k["kind"]])])
              for k in top]
    body.append(grouped_bars(groups, "the 25 slowest kernels (# = row of the table below)", fmt_us,
                             chart_id="chart-top-kernels"))
    body.append("<h2>Kernels</h2>" + _table(
        ["#", "kernel", "nodes", "latency", "off-chip", "note"],
        [[str(i), escape(k["description"]), escape(", ".join(k["nodes"])), fmt_us(k["latency_us"]),
          human_bytes(k["dram_bytes"]) if k.get("dram_bytes") is not None else "-",
          "fallback" if k.get("fallback") else ("free" if k.get("free") else "")] for i, k in enumerate(kernels)],
        table_id="table-kernels-all", text_cols=(1, 2)))
    body.append("<h2>Estimator provenance</h2>" + provenance_html(doc.get("provenance") or {}))
    return page(f"hwopt estimate {Path(doc['model']).name}", body)


def measure_html(doc: dict[str, Any]) -> str:
    body = [f"<h1>hwopt measure: {escape(Path(doc['model']).name)} on {escape(doc['target'])}</h1>",
            _meta([("command", f"<code>{escape((doc.get('run') or {}).get('command', '-'))}</code>"),
                   ("measured latency", fmt_us(doc["latency_us"])), ("backend", escape(str(doc.get("backend")))),
                   ("estimated latency", fmt_us(doc.get("estimated_us"))),
                   *_onchip_rows((doc.get("meta") or {}).get("onchip")),
                   ("details", escape(", ".join(f"{k}={v}" for k, v in (doc.get("meta") or {}).items()
                                                if k != "onchip")))])]
    body.append("<h2>Estimate against measurement</h2>" + provenance_html(doc.get("provenance") or {}))
    return page(f"hwopt measure {Path(doc['model']).name}", body)


def apply_html(doc: dict[str, Any]) -> str:
    before, after = doc["before"], doc["after"]
    body = [f"<h1>hwopt apply: {escape(Path(doc.get('model', '')).name)}</h1>",
            _meta([("command", f"<code>{escape((doc.get('run') or {}).get('command', '-'))}</code>"),
                   ("written to", escape(str(doc.get("output")))), ("exact", "yes" if doc["exact"] else "no")]),
            _inputs_banner((doc.get("run") or {}).get("inputs"))]
    keys = [k for k in before if isinstance(before[k], (int, float)) and k in after]
    body.append("<h2>Before and after</h2>" + _table(
        ["figure", "before", "after", "change"],
        [[escape(k), f"{before[k]:,}", f"{after[k]:,}", f"{after[k] / before[k] - 1:+.1%}" if before[k] else "-"]
         for k in keys], table_id="table-metrics"))
    rows = []
    for s in doc["steps"]:
        comp = s.get("comparison") or {}
        rows.append([escape(s["rule"]), escape(", ".join(a["site"] for a in s["applied"]) or "-"),
                     escape("; ".join(f"{x['site']}: {x['reason']}" for x in s["skipped"]) or "-"),
                     "yes" if s["exact"] else "no", fmt_dev(comp.get("worst_rel_l2")), f"{s['seconds']:.1f} s"])
    body.append("<h2>Steps</h2>" + _table(["rule", "applied at", "skipped", "exact", "deviation", "time"], rows,
                                          table_id="table-steps", text_cols=(1, 2)))
    return page("hwopt apply", body)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "optimize": optimize_html, "estimate": estimate_html, "measure": measure_html, "apply": apply_html}


def render(kind: str, doc: dict[str, Any]) -> str:
    return RENDERERS[kind](doc)

