"""Whole models measured by Vela, for an Ethos-U estimator's in-model term (``hwopt train --end-to-end``).

    PYTHONPATH=. python -m bench.vela_end_to_end -t ethos-u55-256 [--work build/vela_e2e]

Vela schedules across layers (cascading, weight buffering, tensors kept in SRAM between layers), so a
model's time is not the sum of its kernels compiled alone. The models: the shipped examples
(``examples.zoo``) and the smaller versions of MobileNetV2 / MobileNetV3-Small of
``bench/small_models.py`` (width 0.25-1.0, 64-160 px and text-line shapes), none of them a real export
of ``tests/data`` (the card's unseen set). Writes ``WORK/end_to_end.<target>.csv`` (model paths relative
to it: the form ``hwopt train --end-to-end`` reads) and prints each model's Vela latency.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

from bench.small_models import small_models
from examples.build import build_example
from hwopt.backends.vela import measure_model
from hwopt.estimator.profile import example_names
from hwopt.targets import load_target


def models(work: Path) -> dict[str, Path]:
    out = {name: build_example(name, work / "examples") for name in example_names()}
    out.update(small_models(work / "small"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--target", action="append", required=True)
    parser.add_argument("--work", type=Path, default=Path("build/vela_e2e"))
    args = parser.parse_args()
    found = models(args.work)
    for name in args.target:
        target = load_target(name)
        out = args.work / f"end_to_end.{name}.csv"
        rows = []
        for label, path in found.items():
            start = time.perf_counter()
            m = measure_model(path, target)
            rows.append({"model": os.path.relpath(path, out.parent), "latency_us": round(m.latency_us, 3)})
            print(f"{name} {label:40s} {m.latency_us / 1000:8.3f} ms  npu {m.meta['cycles_npu']:>10.0f} cycles  "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, ["model", "latency_us"])
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
