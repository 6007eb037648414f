"""Writing a variant's decisions as a rule-set file that ``hwopt apply --rules`` replays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwopt.io.atomic import atomic_write_text
from hwopt.rewrites.ruleset import RuleStep


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


def rules_header(model: Path, request, target: str, rules_out: Path, steps: list[RuleStep]) -> list[str]:
    """The comment atop ``optimize --save-rules``: where the decisions come from (an ``OptimizeRequest``),
    how to replay them, and which of them need fine-tuning."""
    seed, calibration, preprocess = request.seed, request.calibration, request.preprocess
    calibration_samples, eval_samples, holdout = request.calibration_samples, request.eval_samples, request.holdout
    header = [f"hwopt optimize {model.name} --target {target} (seed {seed}): the chosen "
              f"variant's decisions.", f"Replay: hwopt apply {model.name} --rules {rules_out.name} -o OUT.onnx "
              f"--seed {seed} --calibration-samples {calibration_samples}"
              + (f" --holdout {holdout:g}" if holdout is not None else "")
              + (f" --eval-samples {eval_samples}" if eval_samples else "")
              + (f" --calibration {calibration.name}" if calibration else "")
              + (f" --preprocess {preprocess}" if preprocess else "")]
    if request.for_retraining:
        header.append("--for-retraining: the weights are only an initialisation; make these decisions in the "
                      "training code and train")
    fine = [s for s in steps if s.rule != "dw-to-dense"
            and not (s.rule == "align-channels" and s.params.get("mode") == "pad")]
    if fine:
        refit = "calibration data" if calibration else "random inputs"
        header.append(f"Needs fine-tuning (inexact, refit on {refit} only): " + "; ".join(s.label() for s in fine))
    return header
