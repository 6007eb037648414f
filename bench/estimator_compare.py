"""Two estimators of one target on the same real exports: the shipped one and one of an earlier commit.

    PYTHONPATH=. python -m bench.estimator_compare -t ethos-u55-256 --old-rev b0a3fb3 --real-from build/fresh/specs.txt

The earlier estimator is the folder ``estimator/<target>/`` as commit ``--old-rev`` had it (``git archive``
into a temporary folder), loaded with that commit's own target file (its fusion policy), so each estimator
schedules the models as it was trained to. Both estimate each export once; the truth is whole-model Vela
(``hwopt measure``, cached by the Vela backend). Prints one line per export (Vela's latency, each
estimate's error) and, per estimator, how many are within 10% and the median |error|. Nothing is trained
or changed: run it on exports neither estimator was tuned on, or say which were.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decision_accuracy import read_specs, real_models  # noqa: E402


def old_folder(target: str, rev: str, into: Path) -> Path:
    """``estimator/<target>/`` as commit ``rev`` had it, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, f"estimator/{target}"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "estimator" / target


def main() -> int:
    from hwopt.backends.vela import measure_model
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.estimator.estimator import load_estimator
    from hwopt.io.model import InputShape
    from hwopt.targets import load_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--target", required=True)
    parser.add_argument("--old-rev", required=True, help="the commit whose estimator/<target>/ to compare with")
    parser.add_argument("--real-from", action="append", default=[], type=Path, metavar="SPECS")
    parser.add_argument("--real", action="append", default=[], help="a real export PATH[:NAME=1x3xHxW]")
    args = parser.parse_args()
    specs = read_specs(*args.real_from) + args.real
    with tempfile.TemporaryDirectory() as tmp:
        folder = old_folder(args.target, args.old_rev, Path(tmp))
        new_target = load_target(args.target)
        estimators = {args.old_rev: load_estimator(load_target(folder / "target.toml"), folder),
                      "shipped": load_estimator(new_target)}
        errors: dict[str, list[float]] = {name: [] for name in estimators}
        for label, path, shapes in real_models(specs, bundled=False):
            original, _, _ = load_canonical(path, [InputShape.parse(s) for s in shapes])
            measured = measure_model(original, new_target).latency_us
            line = f"{label:45s} Vela {measured / 1e3:9.3f} ms"
            for name, estimator in estimators.items():
                error = estimator.estimate(original).latency_us / measured - 1
                errors[name].append(error)
                line += f"  {name} {error:+7.1%}"
            print(line, flush=True)
    for name, values in errors.items():
        within = sum(abs(e) <= 0.10 for e in values)
        print(f"{args.target} {name}: within 10% on {within} of {len(values)}, median |error| "
              f"{statistics.median(abs(e) for e in values):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
