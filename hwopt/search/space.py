"""The search space: one decision variable per site, each with a short list of options.

Variables (ids are the site ids of ``hwopt inspect``):

- ``ibnN`` (a fusable IBN block): ``dw`` (as is), ``fuse`` (fuse-ibn), ``dense``
  (its depthwise conv through dw-to-dense). One variable rather than two,
  because a fused block has no depthwise conv left to make dense.
- ``dwN`` (a depthwise conv outside a fusable block): ``dw`` or ``dense``.
- Both may also take ``gN`` (dw-to-grouped: N channels per group, for each
  configured width that gives a distinct grouping of the conv's channels).
- ``ch:...`` (a resizable channel group): channel counts. Every group may be
  rounded up (align-channels pad, exact) or down (trim) to a multiple of P; an
  IBN block's hidden group may also take the widths of the depth multipliers
  (depth-multiplier, rounded to multiples of P).

Every option knows the rule step that materialises it (``Choice``), so a
variant turns into rule steps for ``apply_steps`` and into a rule-set file.
Pinned ``[[rule]]`` entries become variables with one option.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any

from hwopt.analysis.channel_groups import ChannelGroup
from hwopt.errors import HwoptError
from hwopt.rewrites import get_rule
from hwopt.rewrites.align_channels import aligned_channels
from hwopt.rewrites.depth_multiplier import scaled_channels
from hwopt.rewrites.dw_to_grouped import group_width
from hwopt.rewrites.ruleset import RuleStep
from hwopt.search.config import SearchConfig
from hwopt.analysis.sites import Analysis


@dataclass(frozen=True)
class Choice:
    """How an option is materialised: one rule at its site(s) with these parameters (None: as is)."""

    rule: str
    site: str | tuple[str, ...]  # a tuple: the global depth multiplier, one step over many blocks
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def sites(self) -> tuple[str, ...]:
        return self.site if isinstance(self.site, tuple) else (self.site,)


@dataclass(frozen=True)
class Option:
    value: Any  # "dw" | "fuse" | "dense" for blocks and depthwise convs; a channel count for groups
    choice: Choice | None  # None: the original
    exact: bool = True

    @property
    def label(self) -> str:
        if self.choice is None:
            return str(self.value) if not isinstance(self.value, int) else f"{self.value} ch"
        if isinstance(self.value, float):  # the global depth multiplier
            return f"x{self.value:g} ({len(self.choice.sites)} blocks)"
        if isinstance(self.value, int):
            params = dict(self.choice.params)
            how = params.get("mode") or f"x{params.get('ratio', 0):.3g}"
            return f"{self.value} ch ({how})"
        return str(self.value)


@dataclass
class Variable:
    id: str
    kind: str  # "block" | "dw" | "ch"
    options: list[Option]
    pinned: bool = False
    group: ChannelGroup | None = None  # kind "ch"
    block: Any = None  # kind "block": the IBNBlock
    dw: Any = None  # kind "block" / "dw": the DepthwiseConv node
    # The channel groups this variable sets, with the width of each per option (kind "ch": its group;
    # kind "dm", the global depth multiplier: every hidden group it scales).
    tables: list[tuple[ChannelGroup, tuple[int, ...]]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.options)

    @property
    def allowed(self) -> list[int]:
        """Option indices the search may take: a pinned variable keeps its pinned option (the last)."""
        return [len(self.options) - 1] if self.pinned else list(range(len(self.options)))


@dataclass
class Space:
    variables: list[Variable]
    p: int
    config: SearchConfig
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Variants the search can reach (pinned variables count once)."""
        return math.prod(len(v.allowed) for v in self.variables)

    @property
    def baseline(self) -> tuple[int, ...]:
        """The original model (no rule applied, pinned ones neither)."""
        return tuple(0 for _ in self.variables)

    @property
    def start(self) -> tuple[int, ...]:
        """The original model with the pinned decisions: where every search starts."""
        return tuple(v.allowed[0] for v in self.variables)

    def index(self, var_id: str) -> int:
        for i, v in enumerate(self.variables):
            if v.id == var_id:
                return i
        raise KeyError(var_id)

    def describe(self, decisions: tuple[int, ...]) -> dict[str, str]:
        return {v.id: v.options[d].label for v, d in zip(self.variables, decisions)}

    def drop_rule(self, rule: str, reason: str) -> None:
        """Take a rule's options out of the search (pinned ones stay), with a note saying why."""
        dropped = 0
        for var in self.variables:
            if var.pinned:
                continue
            keep = [o for o in var.options if o.choice is None or o.choice.rule != rule]
            dropped += len(var.options) - len(keep)
            var.options = keep
        self.variables = [v for v in self.variables if v.size > 1 or v.pinned]
        if dropped:
            self.notes.append(f"{rule}: not searched ({dropped} options): {reason}")

    def is_exact(self, decisions: tuple[int, ...]) -> bool:
        return all(v.options[d].exact for v, d in zip(self.variables, decisions))

    def steps(self, decisions: tuple[int, ...]) -> list[RuleStep]:
        """The rule steps that materialise a variant, in an order where every site still exists.

        Widths first (depth-multiplier and fuse-ibn find blocks by their depthwise conv, which
        fuse-ibn removes and dw-to-dense turns into a dense conv), then fusion, then dense convs.
        """
        order = ("depth-multiplier", "align-channels", "fuse-ibn", "dw-to-dense", "dw-to-grouped")
        grouped: dict[tuple[str, tuple], list[str]] = {}
        for var, d in zip(self.variables, decisions):
            choice = var.options[d].choice
            if choice is not None:
                grouped.setdefault((choice.rule, choice.params), []).extend(choice.sites)
        steps = []
        for (rule, params), sites in sorted(grouped.items(), key=lambda kv: (order.index(kv[0][0]), str(kv[0][1]))):
            steps.append(RuleStep(rule, get_rule(rule).parse_params(dict(params)), sites, "search"))
        return steps


def _matches(site_id: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(site_id, p) for p in patterns)


def hidden_group(analysis: Analysis, block) -> ChannelGroup | None:
    for group in analysis.groups:
        if block.expand is not None and block.expand in group.producers:
            return group
    return None


def _fmt_ratio(ratio: float) -> float:
    return float(f"{ratio:.6g}")


def _channel_options(group: ChannelGroup, block_id: str | None, config: SearchConfig, p: int) -> list[Option]:
    """Channel counts for a group: the original first, then pad / trim / depth multipliers."""
    c = group.channels
    found: dict[int, Option] = {}
    align = config.rules.get("align-channels")
    if align and _matches(group.id, align.sites) and c % p:
        for mode in align.modes:
            width = aligned_channels(c, p, mode)
            if width > 0:
                found.setdefault(width, Option(width, Choice("align-channels", group.id,
                                                             (("mode", mode), ("p", p))), mode == "pad"))
    dm = config.rules.get("depth-multiplier")
    if dm and block_id is not None and _matches(block_id, dm.sites):
        widths: list[tuple[int, float]] = [(scaled_channels(c, r, p), r) for r in dm.ratios]
        if dm.width_range is not None:
            lo, hi = dm.width_range
            widths += [(w, w / c) for w in range(p, int(c * hi) + 1, p) if w >= c * lo]
        for width, ratio in widths:
            if width != c and width not in found:
                # The configured ratio when it gives this width (a readable rule file), else width / c.
                if scaled_channels(c, ratio, p) != width:
                    ratio = width / c
                found[width] = Option(width, Choice("depth-multiplier", block_id,
                                                    (("p", p), ("ratio", _fmt_ratio(ratio)))), False)
    return [Option(c, None)] + [found[w] for w in sorted(found)]


def _conv_options(dw, config: SearchConfig, p: int) -> list[Option]:
    """A depthwise conv's exact alternatives: dense, and grouped at each distinct group width."""
    options = []
    dense, grouped = config.rules.get("dw-to-dense"), config.rules.get("dw-to-grouped")
    if dense and _matches(dw.id, dense.sites):
        options.append(Option("dense", Choice("dw-to-dense", dw.id), True))
    if grouped and _matches(dw.id, grouped.sites):
        channels = dw.attrs.in_channels
        seen = set()
        for wanted in grouped.group_widths(p):
            width = group_width(channels, wanted)
            if 2 <= width < channels and width not in seen:
                seen.add(width)
                options.append(_grouped_option(dw.id, width))
    return options


def _grouped_option(dw_id: str, width: int) -> Option:
    return Option(f"g{width}", Choice("dw-to-grouped", dw_id, (("channels", width),)), True)


def grouped_width(value: object) -> int | None:
    """The channels per group of a ``gN`` option value (dw-to-grouped), else None."""
    if isinstance(value, str) and value.startswith("g") and value[1:].isdigit():
        return int(value[1:])
    return None


def build_space(analysis: Analysis, config: SearchConfig, p: int) -> Space:
    """Variables for every searchable site of the canonical model; pinned entries fixed."""
    variables: list[Variable] = []
    fuse = config.rules.get("fuse-ibn")
    in_block: dict[str, Any] = {}
    hidden_of: dict[str, str] = {}  # group id -> block id
    for block in analysis.blocks:
        if not block.fusable:
            continue
        dw = next(d for d in analysis.depthwise if d.node is block.depthwise)
        in_block[dw.id] = block
        options = [Option("dw", None)]
        if fuse and _matches(block.id, fuse.sites):
            options.append(Option("fuse", Choice("fuse-ibn", block.id), False))
        options += _conv_options(dw, config, p)
        variables.append(Variable(block.id, "block", options, block=block, dw=dw))
        group = hidden_group(analysis, block)
        if group is not None:
            hidden_of[group.id] = block.id
    for dw in analysis.depthwise:
        if dw.id in in_block:
            continue
        options = [Option("dw", None)] + _conv_options(dw, config, p)
        variables.append(Variable(dw.id, "dw", options, dw=dw))
    dm = config.rules.get("depth-multiplier")
    global_dm = dm is not None and dm.scope == "global"
    hidden_groups: list[tuple[str, ChannelGroup]] = []
    for group in analysis.groups:
        if not group.resizable:
            continue
        block_id = hidden_of.get(group.id)
        if global_dm and block_id is not None and _matches(block_id, dm.sites):
            hidden_groups.append((block_id, group))
            continue  # its width is the global multiplier's
        options = _channel_options(group, None if global_dm else block_id, config, p)
        variables.append(Variable(group.id, "ch", options, group=group,
                                  tables=[(group, tuple(o.value for o in options))]))
    if global_dm and hidden_groups:
        variables.append(_global_multiplier(hidden_groups, dm.ratios, p))
    space = Space(variables, p, config)
    for step in config.pinned:
        _pin(space, analysis, step, hidden_of)
    space.variables = [v for v in space.variables if v.size > 1 or v.pinned]
    return space


def _global_multiplier(hidden: list[tuple[str, ChannelGroup]], ratios: tuple[float, ...], p: int) -> Variable:
    """One decision for every hidden width: x ratio, rounded to multiples of P (one rule step)."""
    options = [Option(1.0, None)]
    for ratio in sorted(set(ratios)):
        widths = [scaled_channels(g.channels, ratio, p) for _, g in hidden]
        sites = tuple(b for (b, g), w in zip(hidden, widths) if w != g.channels)
        if sites and ratio != 1.0:
            options.append(Option(float(ratio), Choice("depth-multiplier", sites,
                                                       (("p", p), ("ratio", _fmt_ratio(ratio)))), False))
    tables = []
    for _, group in hidden:
        widths = [group.channels] + [scaled_channels(group.channels, o.value, p) for o in options[1:]]
        tables.append((group, tuple(widths)))
    return Variable("depth-multiplier", "dm", options, tables=tables)


def _pin(space: Space, analysis: Analysis, step: RuleStep, hidden_of: dict[str, str]) -> None:
    """Fix the variables a pinned ``[[rule]]`` step decides (error on a site it cannot apply to)."""
    rule = get_rule(step.rule)
    sites = analysis.select(step.sites, rule.site_kind) if step.sites else rule.find_sites(analysis)
    by_id = {v.id: v for v in space.variables}
    block_of_dw = {v.dw.id: v for v in space.variables if v.kind == "block"}
    params = tuple(sorted((k, v) for k, v in step.params.items() if k in ("mode", "p", "ratio")))
    for site in sites:
        reason = rule.check(site, step.params, analysis)
        if reason is not None:
            if step.sites and site.id in step.sites:
                raise HwoptError(f"{step.source}: {step.rule} cannot apply at {site.id}: {reason}")
            continue
        if step.rule == "fuse-ibn":
            var, option = by_id.get(site.id), Option("fuse", Choice("fuse-ibn", site.id), False)
        elif step.rule == "dw-to-dense":
            var = block_of_dw.get(site.id) or by_id.get(site.id)
            option = Option("dense", Choice("dw-to-dense", site.id), True)
        elif step.rule == "dw-to-grouped":
            var = block_of_dw.get(site.id) or by_id.get(site.id)
            option = _grouped_option(site.id, group_width(site.target.attrs.in_channels, step.params["channels"]))
        elif step.rule == "align-channels":
            width = aligned_channels(site.target.channels, step.params["p"], step.params["mode"])
            var = by_id.get(site.id)
            option = Option(width, Choice("align-channels", site.id, params), step.params["mode"] == "pad")
        else:  # depth-multiplier: the block's hidden group
            group = hidden_group(analysis, site.target)
            var = by_id.get(group.id) if group is not None else None
            width = scaled_channels(group.channels, step.params["ratio"], step.params["p"]) if group else 0
            option = Option(width, Choice("depth-multiplier", site.id, params), False)
        if var is None:
            raise HwoptError(f"{step.source}: cannot pin {step.rule} at {site.id} (not a searchable site)")
        if var.pinned:
            raise HwoptError(f"{step.source}: {site.id} is already pinned by an earlier [[rule]]")
        var.options, var.pinned = [var.options[0], option], True
        if var.kind == "ch":
            var.tables = [(var.group, tuple(o.value for o in var.options))]
