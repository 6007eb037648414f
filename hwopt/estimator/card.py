"""The estimator card: ``card.json`` (machine-readable) and a short ``CARD.md`` rendered from it."""

from __future__ import annotations

import json
from pathlib import Path


def _md(card: dict) -> str:
    t = card.get("training", {})
    lines = [f"# Estimator card: {card.get('target', '?')}", "",
             "## Training data", "",
             f"- table: `{t.get('table', '?')}`, {t.get('rows', '?')} kernels "
             f"({t.get('rows_ignored', 0)} rows ignored: views/unknown/non-positive)",
             f"- kinds: {', '.join(f'{k} {v}' for k, v in sorted(t.get('kinds', {}).items()))}",
             f"- latency groups (own model at >= 40 rows, else shared): "
             + ", ".join(f"{g} ({v['rows']} rows, CV RMSE log {v['cv_rmse_log']})"
                         for g, v in t.get("groups", {}).items()),
             f"- off-chip traffic head: {'yes' if t.get('dram_groups') else 'no (the backend does not measure it)'}"]
    lines += [f"- {note}" for note in card.get("notes", [])] + [""]
    acc = card.get("accuracy")
    if acc:
        lines += ["## Accuracy on held-out model families", ""]
        lines += [str(line) for line in acc.get("summary_lines", [])]
        if acc.get("stale"):
            lines += ["", f"**Stale:** {acc['stale']}"]
    else:
        lines += ["## Accuracy", "", "Not measured yet: run `python -m bench.estimator_accuracy`."]
    for key, title in (("charge_check", "Repeated runs: the pipelined charge against SCALE-Sim itself"),
                       ("decision_accuracy", "Decision accuracy: the sign of every single-site rewrite"),
                       ("interval_coverage", "Intervals on real exports never measured")):
        section = card.get(key)
        if section:
            lines += ["", f"## {title}", "", f"`{section.get('command', '')}`", ""]
            lines += [str(line) for line in section.get("summary_lines", [])]
            if section.get("stale"):
                lines += ["", f"**Stale:** {section['stale']}"]
    lines += ["", "Full figures: `card.json`."]
    return "\n".join(lines) + "\n"


def write_card(folder: str | Path, card: dict) -> None:
    from hwopt.io.atomic import atomic_write_text

    folder = Path(folder)
    atomic_write_text(folder / "card.json", json.dumps(card, indent=1, sort_keys=True, default=str) + "\n")
    atomic_write_text(folder / "CARD.md", _md(card))


def read_card(folder: str | Path) -> dict:
    path = Path(folder) / "card.json"
    return json.loads(path.read_text()) if path.exists() else {}
