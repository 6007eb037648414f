"""Writing a variant's decisions as a rule-set file that ``hwopt apply --rules`` replays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwopt.atomic import atomic_write_text
from hwopt.ruleset import RuleStep


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def rules_toml(steps: list[RuleStep], header: list[str]) -> str:
    lines = [f"# {line}" for line in header] + [""]
    for step in steps:
        lines.append("[[rule]]")
        lines.append(f"name = {_toml_value(step.rule)}")
        lines.append(f"sites = {_toml_value(step.sites)}")
        for key, value in step.params.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def write_rules(path: Path, steps: list[RuleStep], header: list[str]) -> None:
    atomic_write_text(path, rules_toml(steps, header))
