"""The search part of a rule-set file: which rules the search may use, where, with which options.

A rule-set file for ``hwopt optimize`` is an ordinary rule-set file (see
``hwopt.rewrites.ruleset``) with an extra ``[search]`` table. Its sub-tables name the
searchable rules; a rule without a sub-table is never chosen by the search::

    [search]
    # p = 32                      # parallelism factor; default: the target's

    [search.fuse-ibn]             # per IBN block: fuse or not
    sites = ["ibn*"]              # ids or globs (default: every site)

    [search.dw-to-dense]          # per depthwise conv: dense or not
    sites = ["dw*"]

    [search.dw-to-grouped]        # per depthwise conv: grouped, this many channels per group
    sites = ["dw*"]
    channels = [8, 16, 32]        # default: P/4, P/2, P

    [search.align-channels]       # per channel group: round up (pad, exact) / down (trim)
    sites = ["ch:*"]
    modes = ["pad", "trim"]

    [search.depth-multiplier]     # per IBN block: hidden width, multiples of P
    sites = ["ibn*"]
    ratios = [0.5, 0.75, 1.0, 1.25]   # x hidden width, rounded to multiples of P
    # range = [0.75, 1.25]            # alternatively: every multiple of P in [0.75 C, 1.25 C]
    # scope = "global"                # one ratio for every block (default "block": one per block)

``[lower.NAME]`` tables name *lowerings*: exact rules the estimators do not price (they change how an
op is lowered, not its geometry), so the search does not score them; ``optimize`` applies them to its
pick and to the original, and keeps them where the target's whole-model judge (Vela) measures them
faster by the floor::

    [lower.prelu-to-dwconv]       # per PReLU: its slope as a 1x1 depthwise conv
    sites = ["pr*"]

    [lower.pad-to-conv]           # per channel zero-pad: a 1x1 conv (identity and zero rows)
    sites = ["pad*"]

Each lowering is judged on top of those kept before it, in the file's order.

``[[rule]]`` entries in the same file are pinned decisions: the search keeps
them as they are (with ``sites``: at those sites; without: wherever the rule
applies) and searches the rest. ``hwopt apply --rules`` ignores ``[search]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwopt.errors import HwoptError, did_you_mean
from hwopt.rewrites import RULES
from hwopt.rewrites.ruleset import RuleStep, load_rule_file, warn_unknown_tables
from hwopt.io.tomlfile import read_toml

# The rules' own bounds (align-channels / depth-multiplier p, depth-multiplier ratio).
MAX_P = 1024
MAX_RATIO = 4.0
_KEYS = {
    "fuse-ibn": {"sites"},
    "dw-to-dense": {"sites"},
    "dw-to-grouped": {"sites", "channels"},
    "align-channels": {"sites", "modes"},
    "depth-multiplier": {"sites", "ratios", "range", "scope"},
}


@dataclass
class SearchRule:
    name: str
    sites: list[str] = field(default_factory=lambda: ["*"])
    modes: tuple[str, ...] = ("pad", "trim")  # align-channels
    ratios: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25)  # depth-multiplier
    width_range: tuple[float, float] | None = None  # depth-multiplier: every multiple of P in the range
    scope: str = "block"  # depth-multiplier: "block" (a width per block) or "global" (one ratio for all)
    channels: tuple[int, ...] | None = None  # dw-to-grouped: channels per group (None: P/4, P/2, P)

    def group_widths(self, p: int) -> tuple[int, ...]:
        """dw-to-grouped's channels per group: as configured, else P/4, P/2 and P (at least 2)."""
        return self.channels or tuple(sorted({w for w in (p // 4, p // 2, p) if w >= 2}))


@dataclass
class SearchConfig:
    rules: dict[str, SearchRule] = field(default_factory=dict)
    pinned: list[RuleStep] = field(default_factory=list)
    p: int | None = None
    source: str = ""
    lowerings: dict[str, list[str]] = field(default_factory=dict)  # [lower.NAME]: rule -> site patterns

    def restricted_to_exact(self) -> "SearchConfig":
        """Only function-preserving choices: dense instead of depthwise, channel padding."""
        rules = {}
        for exact in ("dw-to-dense", "dw-to-grouped"):
            if exact in self.rules:
                rules[exact] = self.rules[exact]
        if "align-channels" in self.rules and "pad" in self.rules["align-channels"].modes:
            align = self.rules["align-channels"]
            rules["align-channels"] = SearchRule(align.name, align.sites, ("pad",))
        pinned = [s for s in self.pinned if RULES[s.rule].is_exact(s.params)]
        dropped = [s.label() for s in self.pinned if not RULES[s.rule].is_exact(s.params)]
        if dropped:
            raise HwoptError(f"--exact-only: the rule set pins inexact rules ({', '.join(dropped)})")
        return SearchConfig(rules, pinned, self.p, self.source + " (exact only)", dict(self.lowerings))


def _sites(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise HwoptError(f"{where}: sites must be a non-empty list of site ids or globs")
    return value


def _numbers(value: Any, where: str, key: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v <= MAX_RATIO
            for v in value):
        raise HwoptError(f"{where}: {key} must be a non-empty list of finite positive numbers up to {MAX_RATIO}")
    return tuple(float(v) for v in value)


def parse_search(data: dict, where: str) -> tuple[dict[str, SearchRule], int | None]:
    if not isinstance(data, dict):
        raise HwoptError(f"{where}: [search] must be a table")
    p = data.get("p")
    if p is not None and (not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= MAX_P):
        raise HwoptError(f"{where}: [search] p must be a positive integer up to {MAX_P}, got {p!r}")
    rules: dict[str, SearchRule] = {}
    for name, table in data.items():
        if name == "p":
            continue
        if name not in _KEYS:
            raise HwoptError(f"{where}: [search.{name}]: not a searchable rule{did_you_mean(name, _KEYS)} "
                             f"(searchable: {', '.join(_KEYS)})")
        table = table if isinstance(table, dict) else {}
        unknown = sorted(set(table) - _KEYS[name])
        if unknown:
            raise HwoptError(f"{where}: [search.{name}]: unknown key {unknown[0]!r} "
                             f"(keys: {', '.join(sorted(_KEYS[name]))})")
        rule = SearchRule(name)
        if "sites" in table:
            rule.sites = _sites(table["sites"], f"{where} [search.{name}]")
        if "modes" in table:
            modes = table["modes"]
            if not isinstance(modes, list) or not modes or not set(modes) <= {"pad", "trim"}:
                raise HwoptError(f"{where}: [search.{name}] modes must be a list of 'pad' and/or 'trim'")
            rule.modes = tuple(modes)
        if "channels" in table:
            widths = table["channels"]
            if not isinstance(widths, list) or not widths or not all(
                    isinstance(w, int) and not isinstance(w, bool) and 2 <= w <= MAX_P for w in widths):
                raise HwoptError(f"{where}: [search.{name}] channels must be a non-empty list of integers "
                                 f"from 2 to {MAX_P}")
            rule.channels = tuple(sorted(set(widths)))
        if "ratios" in table:
            rule.ratios = _numbers(table["ratios"], f"{where} [search.{name}]", "ratios")
        if "scope" in table:
            if table["scope"] not in ("block", "global"):
                raise HwoptError(f"{where}: [search.{name}] scope must be 'block' or 'global'")
            rule.scope = table["scope"]
        if "range" in table:
            lo_hi = _numbers(table["range"], f"{where} [search.{name}]", "range")
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                raise HwoptError(f"{where}: [search.{name}] range must be [low, high]")
            rule.width_range = (lo_hi[0], lo_hi[1])
        rules[name] = rule
    return rules, p


def parse_lowerings(data: Any, where: str) -> dict[str, list[str]]:
    """``[lower.NAME]`` tables: exact rules judged on whole models by the target's judge (see above)."""
    if not isinstance(data, dict):
        raise HwoptError(f"{where}: [lower] must be a table")
    out = {}
    for name, table in data.items():
        rule = RULES.get(name)
        lowerable = [n for n, r in RULES.items() if getattr(r, "lowering", False)]
        if rule is None or not getattr(rule, "lowering", False):
            raise HwoptError(f"{where}: [lower.{name}]: not a lowering rule{did_you_mean(name, lowerable)} "
                             f"(lowerings: {', '.join(lowerable)})")
        table = table if isinstance(table, dict) else {}
        unknown = sorted(set(table) - {"sites"})
        if unknown:
            raise HwoptError(f"{where}: [lower.{name}]: unknown key {unknown[0]!r} (keys: sites)")
        out[name] = _sites(table["sites"], f"{where} [lower.{name}]") if "sites" in table else []
    return out


def load_search_file(path: str | Path) -> SearchConfig:
    """A rule-set file's ``[search]`` table and its pinned ``[[rule]]`` steps."""
    path = Path(path)
    data = read_toml(path, "rule file")
    pinned = load_rule_file(path) if data.get("rule") else []
    if not data.get("rule"):
        warn_unknown_tables(data, path)
    if "search" not in data and "lower" not in data and not pinned:
        raise HwoptError(f"{path}: neither a [search] table, [lower] tables nor [[rule]] entries")
    rules, p = parse_search(data.get("search", {}), str(path))
    return SearchConfig(rules, pinned, p, str(path), parse_lowerings(data.get("lower", {}), str(path)))


def default_rules_path() -> Path:
    from hwopt.targets import data_root

    return data_root() / "rules" / "default.toml"
