"""Rule steps from the command line (``--rule``) and from rule-set files (TOML).

Command line: ``NAME[:key=value,...][@site,site,...]``, e.g.
``fuse-ibn@ibn1,ibn2`` or ``align-channels:p=16,mode=pad``. Sites are ids or
globs (``ch:*``); no sites means every site where the rule applies.

Rule-set file (an expert edits it)::

    [[rule]]
    name = "fuse-ibn"
    sites = ["ibn1", "ibn2", "ibn3"]

    [[rule]]
    name = "align-channels"
    p = 32            # any other key is a rule parameter
    mode = "pad"

Steps apply in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwopt.errors import HwoptError, warn
from hwopt.io.tomlfile import read_toml
from hwopt.rewrites import get_rule


@dataclass
class RuleStep:
    rule: str
    params: dict[str, Any] = field(default_factory=dict)  # validated, defaults filled in
    sites: list[str] = field(default_factory=list)  # empty: wherever it applies
    source: str = ""  # where the step came from, for messages

    def label(self) -> str:
        shown = ",".join(f"{k}={v}" for k, v in self.params.items())
        return self.rule + (f":{shown}" if shown else "") + (f"@{','.join(self.sites)}" if self.sites else "")


def _coerce(text: str) -> Any:
    """Command-line values: ints and floats as numbers, everything else as a string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_rule_option(text: str) -> RuleStep:
    spec, _, sites = text.partition("@")
    name, _, raw_params = spec.partition(":")
    name = name.strip()
    if not name:
        raise HwoptError(f"bad --rule {text!r}: expected NAME[:key=value,...][@site,...]")
    rule = get_rule(name)
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in raw_params.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HwoptError(f"bad --rule {text!r}: parameter {item!r} should be key=value")
        params[key.strip()] = _coerce(value.strip())
    site_list = [s.strip() for s in sites.split(",") if s.strip()]
    if "@" in text and not site_list:
        raise HwoptError(f"bad --rule {text!r}: no site after '@'")
    return RuleStep(name, rule.parse_params(params), site_list, f"--rule {text}")


def warn_unknown_tables(data: dict[str, Any], path: Path) -> None:
    """A misspelt table (``[serach]``) would be ignored silently: say so."""
    for key in data:
        if key not in ("rule", "search", "lower"):
            warn(f"{path}: unknown {'table' if isinstance(data[key], (dict, list)) else 'key'} {key!r} ignored "
                 f"(known: [[rule]], [search], [lower])")


def load_rule_file(path: str | Path) -> list[RuleStep]:
    path = Path(path)
    data = read_toml(path, "rule file")
    warn_unknown_tables(data, path)
    entries = data.get("rule", [])
    if not isinstance(entries, list) or not entries:
        hint = " (its [search] and [lower] tables are for 'hwopt optimize --rules')" if "search" in data or "lower" in data else ""
        raise HwoptError(f"{path}: no [[rule]] entries{hint}")
    steps = []
    for index, entry in enumerate(entries, 1):
        where = f"{path} rule #{index}"
        if not isinstance(entry, dict) or "name" not in entry:
            raise HwoptError(f"{where}: every [[rule]] needs a name")
        entry = dict(entry)
        name = str(entry.pop("name"))
        sites = entry.pop("sites", [])
        if isinstance(sites, str):
            sites = [sites]
        if not isinstance(sites, list) or not all(isinstance(s, str) for s in sites):
            raise HwoptError(f"{where}: sites must be a list of site ids or globs")
        rule = get_rule(name)
        try:
            params = rule.parse_params(entry)
        except HwoptError as exc:
            raise HwoptError(f"{where}: {exc}") from None
        steps.append(RuleStep(name, params, sites, where))
    return steps
