"""Small inline-SVG charts for the HTML reports: no script, no network, a few KB each.

Three shapes cover the reports: stacked horizontal bars on a shared axis
(``stacked_bars``), grouped horizontal bars (``grouped_bars``) and a scatter
with an optional front line and budget lines (``scatter``). Every mark carries
a ``<title>`` (the browser's tooltip) and ``data-*`` attributes with its value,
so a test can read back what was drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Callable, Sequence

FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac"]


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(ticks[-1] + step)
    return ticks



def _grid(ticks: Sequence[float], left: float, scale: float, top: float, axis_y: float,
          fmt: Callable[[float], str]) -> list[str]:
    """Vertical grid lines with their tick labels under a horizontal-bar chart."""
    xs = [left + t * scale for t in ticks]
    return [f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y}" stroke="#e5e5e5"/>'
            f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#555">{escape(fmt(t))}</text>'
            for x, t in zip(xs, ticks)]

def _attrs(data: dict[str, object]) -> str:
    return "".join(f' data-{k}="{escape(str(v))}"' for k, v in data.items())


@dataclass
class Segment:
    value: float
    color: str
    label: str = ""  # drawn inside when it fits
    title: str = ""  # tooltip
    data: dict[str, object] = field(default_factory=dict)


def stacked_bars(rows: Sequence[tuple[str, Sequence[Segment]]], axis_label: str, fmt: Callable[[float], str],
                 width: int = 960, row_height: int = 46, legend: Sequence[tuple[str, str]] = (),
                 chart_id: str = "", fmt_total: Callable[[float], str] | None = None) -> str:
    """One horizontal bar per row, its segments end to end on a shared axis starting at 0."""
    left, right, top = 110, 70, 24 if legend else 8
    total = max((sum(s.value for s in segs) for _, segs in rows), default=1.0) or 1.0
    ticks = nice_ticks(0, total)
    scale = (width - left - right) / ticks[-1]
    height = top + len(rows) * row_height + 40
    out = [f'<svg class="chart" id="{chart_id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="100%" role="img" style="{FONT};font-size:12px">']
    x0 = left
    for i, (name, color) in enumerate(legend):
        out.append(f'<rect x="{x0}" y="4" width="12" height="12" fill="{color}"/>'
                   f'<text x="{x0 + 16}" y="14">{escape(name)}</text>')
        x0 += 28 + 7 * len(name)
    axis_y = top + len(rows) * row_height + 4
    out.extend(_grid(ticks, left, scale, top, axis_y, fmt))
    out.append(f'<text x="{left + (width - left - right) / 2:.1f}" y="{axis_y + 32}" text-anchor="middle" '
               f'fill="#333">{escape(axis_label)}</text>')
    for r, (name, segs) in enumerate(rows):
        y = top + r * row_height + 6
        h = row_height - 14
        row_total = sum(s.value for s in segs)
        out.append(f'<g class="bar-row" data-row="{escape(name)}" data-total="{row_total!r}">'
                   f'<text x="{left - 8}" y="{y + h / 2 + 4:.1f}" text-anchor="end" font-weight="600">'
                   f'{escape(name)}</text>')
        x = float(left)
        for s in segs:
            w = s.value * scale
            out.append(f'<rect class="segment" x="{x:.2f}" y="{y}" width="{max(w, 0):.2f}" height="{h}" '
                       f'fill="{s.color}" stroke="#fff" stroke-width="0.6"{_attrs({"value": repr(s.value), **s.data})}>'
                       f'<title>{escape(s.title or s.label)}</title></rect>')
            if s.label and w > 7 * len(s.label) + 4:
                out.append(f'<text x="{x + w / 2:.1f}" y="{y + h / 2 + 4:.1f}" text-anchor="middle" fill="#fff" '
                           f'font-size="11" pointer-events="none">{escape(s.label)}</text>')
            x += w
        out.append(f'<text x="{min(x + 6, width - 4):.1f}" y="{y + h / 2 + 4:.1f}" fill="#333" '
                   f'text-anchor="{"start" if x + 60 < width else "end"}">'
                   f'{escape((fmt_total or fmt)(row_total))}</text></g>')
    out.append("</svg>")
    return "".join(out)


def grouped_bars(groups: Sequence[tuple[str, Sequence[tuple[str, float | None, str]]]], axis_label: str,
                 fmt: Callable[[float], str], width: int = 960, bar: int = 9, chart_id: str = "",
                 limit: float | None = None, legend: bool = True) -> str:
    """Per group (a row label), one thin horizontal bar per series (name, value or None, color)."""
    left, right, top = 110, 60, 24
    values = [v for _, series in groups for _, v, _ in series if v is not None]
    ticks = nice_ticks(0, max(values + [limit or 0], default=1.0))
    scale = (width - left - right) / ticks[-1]
    series_count = max((len(s) for _, s in groups), default=1)
    group_h = series_count * (bar + 2) + 8
    height = top + len(groups) * group_h + 40
    out = [f'<svg class="chart" id="{chart_id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="100%" role="img" style="{FONT};font-size:11px">']
    if groups and legend:
        x0 = left
        for name, _, color in groups[0][1]:
            out.append(f'<rect x="{x0}" y="4" width="12" height="12" fill="{color}"/>'
                       f'<text x="{x0 + 16}" y="14" font-size="12">{escape(name)}</text>')
            x0 += 40 + 7 * len(name)
    axis_y = top + len(groups) * group_h
    out.extend(_grid(ticks, left, scale, top, axis_y, fmt))
    if limit is not None:
        x = left + limit * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#c0392b" '
                   f'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{left + (width - left - right) / 2:.1f}" y="{axis_y + 32}" text-anchor="middle" '
               f'fill="#333" font-size="12">{escape(axis_label)}</text>')
    for g, (name, series) in enumerate(groups):
        y = top + g * group_h + 4
        out.append(f'<text x="{left - 8}" y="{y + group_h / 2:.1f}" text-anchor="end">{escape(name)}</text>')
        for k, (sname, value, color) in enumerate(series):
            if value is None:
                continue
            by = y + k * (bar + 2)
            w = value * scale
            out.append(f'<rect class="bar" x="{left}" y="{by}" width="{w:.2f}" height="{bar}" fill="{color}"'
                       f'{_attrs({"group": name, "series": sname, "value": repr(value)})}>'
                       f'<title>{escape(f"{name}, {sname}: {fmt(value)}")}</title></rect>'
                       f'<text x="{left + w + 4:.1f}" y="{by + bar - 1}" fill="#555" font-size="10">'
                       f'{escape(fmt(value))}</text>')
    out.append("</svg>")
    return "".join(out)


@dataclass
class Point:
    x: float
    y: float
    label: str = ""
    title: str = ""
    color: str = "#4e79a7"
    chosen: bool = False
    front: bool = False
    data: dict[str, object] = field(default_factory=dict)


def scatter(points: Sequence[Point], x_label: str, y_label: str, fx: Callable[[float], str],
            fy: Callable[[float], str], width: int = 470, height: int = 340, x_budget: float | None = None,
            y_budget: float | None = None, budget_names: tuple[str, str] = ("", ""), chart_id: str = "",
            log_y: bool = False, y_unit: float = 1.0, y_max: float | None = None) -> str:
    """Points, the front (points with ``front``) joined by a line, the chosen one ringed, budget lines.
    ``y_unit``: y ticks fall on round multiples of it (2**20: round MiB)."""
    left, right, top, bottom = 84, 26, 14, 46
    xs = [p.x for p in points] + ([x_budget] if x_budget else [])
    ys = [p.y for p in points] + ([y_budget] if y_budget is not None else [])
    ty = (lambda v: math.log10(max(v, 1e-9))) if log_y else (lambda v: v)
    x_ticks = nice_ticks(min(xs, default=0) * 0.95, max(xs, default=1) * 1.02, 5)
    if log_y:
        lo, hi = math.floor(ty(min(ys, default=1))), math.ceil(ty(max(ys, default=1)) + 1e-9)
        y_ticks = [float(e) for e in range(lo, max(hi, lo + 1) + 1)]
    else:
        lo_y, hi_y = min(ys, default=0) / y_unit, max(ys, default=1) / y_unit
        y_ticks = [t * y_unit for t in nice_ticks(lo_y * 0.95, hi_y * 1.02 if y_max is None else hi_y, 5)]
        if y_max is not None:  # a share: no tick above 100%
            y_ticks = [t for t in y_ticks if t <= y_max + 1e-12] or [y_max]
    pw, ph = width - left - right, height - top - bottom

    def px(v: float) -> float:
        return left + (v - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * pw

    def py(v: float) -> float:
        return top + ph - (ty(v) - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * ph

    out = [f'<svg class="chart" id="{chart_id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="100%" role="img" style="{FONT};font-size:11px">'
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>']
    for t in x_ticks:
        out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + ph}" stroke="#eee"/>'
                   f'<text x="{px(t):.1f}" y="{top + ph + 14}" text-anchor="middle" fill="#555">{escape(fx(t))}</text>')
    for t in y_ticks:
        value = 10 ** t if log_y else t
        y = top + ph - (t - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * ph
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{escape(fy(value))}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="#333" font-size="12">'
               f'{escape(x_label)}</text><text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle" fill="#333" font-size="12">{escape(y_label)}</text>')
    placed: list[tuple[float, float, float, float]] = []  # label boxes already drawn (x0, y0, x1, y1)
    dots = [(px(p.x), py(p.y)) for p in points]

    def free(box: tuple[float, float, float, float]) -> bool:
        """Inside the plot, over no point and no earlier label."""
        inside = box[0] >= left and box[2] <= left + pw and box[1] >= top and box[3] <= top + ph
        return inside and not any(box[0] - 7 < x < box[2] + 7 and box[1] - 7 < y < box[3] + 7 for x, y in dots) \
            and not any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3] for b in placed)

    def budget_label(spots: list[tuple[float, float, str]], text: str) -> str:
        """The first spot (x, baseline y, anchor) where the label hides no point: budget labels drawn over the
        points they bound hid them."""
        if not text:
            return ""
        w = 6.2 * len(text)

        def box(x: float, y: float, anchor: str) -> tuple[float, float, float, float]:
            x0 = x - w if anchor == "end" else x - w / 2 if anchor == "middle" else x
            return (x0, y - 10, x0 + w, y + 2)

        x, y, anchor = next((spot for spot in spots if free(box(*spot))), spots[0])
        placed.append(box(x, y, anchor))
        return (f'<text class="budget-label" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" '
                f'fill="#c0392b">{escape(text)}</text>')

    if x_budget:
        bx = px(x_budget)
        out.append(f'<line class="budget" x1="{bx:.1f}" y1="{top}" x2="{bx:.1f}" y2="{top + ph}" stroke="#c0392b" '
                   f'stroke-dasharray="5 3"/>')
        out.append(budget_label([(bx - 4, top + 12, "end"), (bx - 4, top + ph - 4, "end"), (bx + 4, top + 12, "start"),
                                 (bx + 4, top + ph - 4, "start")], budget_names[0]))
    if y_budget is not None:
        by = py(y_budget)
        out.append(f'<line class="budget" x1="{left}" y1="{by:.1f}" x2="{left + pw}" y2="{by:.1f}" stroke="#c0392b" '
                   f'stroke-dasharray="5 3"/>')
        out.append(budget_label([(left + pw - 4, by - 4, "end"), (left + pw - 4, by + 13, "end"),
                                 (left + 4, by - 4, "start"), (left + 4, by + 13, "start"),
                                 (left + pw / 2, by - 4, "middle"), (left + pw / 2, by + 13, "middle")],
                                budget_names[1]))
    front = sorted((p for p in points if p.front), key=lambda p: p.x)
    if len(front) > 1:
        path = " ".join(f"{'M' if i == 0 else 'L'}{px(p.x):.1f},{py(p.y):.1f}" for i, p in enumerate(front))
        out.append(f'<path class="front" d="{path}" fill="none" stroke="#888" stroke-width="1.2"/>')

    def place(x: float, y: float, text: str) -> tuple[float, float, str]:
        """A spot for a label near (x, y) inside the plot that overlaps no earlier label."""
        w = 6.2 * len(text)
        anchor_end = x + 7 + w > left + pw
        x0 = x - 7 - w if anchor_end else x + 7
        for dy in (-6, -20, 14, -34, 28, -48, 42, -62):
            box = (x0, y + dy - 10, x0 + w, y + dy + 2)
            inside = box[1] >= top and box[3] <= top + ph
            if inside and not any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3] for b in placed):
                placed.append(box)
                return (x - 7 if anchor_end else x + 7), y + dy, "end" if anchor_end else "start"
        return (x - 7 if anchor_end else x + 7), y - 6, "end" if anchor_end else "start"

    labels = {}
    for p in sorted(points, key=lambda p: not p.chosen):  # the chosen point's label gets the best spot
        if p.label:
            labels[id(p)] = place(px(p.x), py(p.y), p.label)
    texts = []
    for p in sorted(points, key=lambda p: p.chosen):  # the chosen point drawn last: on top
        attrs = _attrs({"x": repr(p.x), "y": repr(p.y), "label": p.label, "chosen": str(p.chosen).lower(),
                        "front": str(p.front).lower(), **p.data})
        ring = (f'<circle class="ring" cx="{px(p.x):.1f}" cy="{py(p.y):.1f}" r="10" fill="none" stroke="#000" '
                f'stroke-width="1.5"/>' if p.chosen else "")
        out.append(f'<g class="point"{attrs}>{ring}'
                   f'<circle cx="{px(p.x):.1f}" cy="{py(p.y):.1f}" r="{6 if p.chosen else 4.5}" '
                   f'fill="{p.color}" stroke="{"#000" if p.chosen else "#fff"}" stroke-width="{2 if p.chosen else 1}">'
                   f'<title>{escape(p.title or p.label)}</title></circle></g>')
        if p.label:
            lx, ly, anchor = labels[id(p)]
            texts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" fill="#333" font-weight="{700 if p.chosen else 400}" '
                         f'text-anchor="{anchor}" pointer-events="none">{escape(p.label)}</text>')
    out += texts
    out.append("</svg>")
    return "".join(out)
