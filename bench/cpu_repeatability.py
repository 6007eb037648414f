"""How well the cpu backend's repeated measurements agree: the same sweep kernels measured several times.

    python -m bench.cpu_repeatability [--passes 6] [--count 20] [--floor-us 20] [--statistic mean|trimmed]

Each pass is one ``OrtBackend.measure`` of the same kernels (one batch, as
``hwopt profile`` times them). For every pair of passes it prints, over the
kernels of at least ``--floor-us`` (smaller ones: the timer's grain):

- ``max`` / ``median``: the largest and the median relative difference;
- ``within_3pct``: the share of kernels whose two figures agree within 3%;
- ``|host|``: the size of the median of the signed differences, i.e. how much the whole
  host changed speed between the two passes (the same for every kernel);
- ``max_net_of_host``: the largest difference once that common factor is
  taken out: what the protocol itself contributes.

for raw latencies (the isolated session) and net ones (raw minus the
boundary, what the table stores). ``--statistic`` combines each kernel's
sessions by their mean (the default) or the mean without the fastest and the
slowest (``session_statistic`` in the target).

Figures measured with it: docs/measurements.md, "How repeatable cpu timings are".
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from dataclasses import replace

from hwopt.backends.ort_cpu import SESSION_STATISTICS, OrtBackend
from hwopt.estimator.profile import sweep
from hwopt.targets import load_target


def agreement(first: list[float], second: list[float], floor_us: float) -> dict:
    pairs = [(a, b) for a, b in zip(first, second) if min(a, b) >= floor_us]
    signed = [(b - a) / min(a, b) for a, b in pairs]
    host = statistics.median(signed)
    return {"max": max(map(abs, signed)), "median": statistics.median(map(abs, signed)),
            "within_3pct": sum(abs(s) <= 0.03 for s in signed) / len(signed), "host": host,
            "max_net_of_host": max(abs(s - host) for s in signed), "kernels": len(signed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=6)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--floor-us", type=float, default=20.0)
    parser.add_argument("--statistic", choices=SESSION_STATISTICS, default="mean")
    args = parser.parse_args()
    backend = OrtBackend(load_target("cpu"))
    backend.settings = replace(backend.settings, session_statistic=args.statistic)
    kernels = sweep(8, count=args.count, seed=0)
    passes = []
    for index in range(args.passes):
        start = time.perf_counter()
        measured = backend.measure(kernels)
        passes.append({"raw": [m.meta["raw_us"] for m in measured], "net": [m.latency_us for m in measured]})
        print(f"pass {index + 1}: {time.perf_counter() - start:.1f} s", flush=True)
    for which in ("raw", "net"):
        rows = [agreement(a[which], b[which], args.floor_us) for a, b in itertools.combinations(passes, 2)]
        print(f"{which}: {len(rows)} pairs of passes, {rows[0]['kernels']} kernels >= {args.floor_us:g} us")
        for key in ("max", "median", "within_3pct", "max_net_of_host"):
            values = [r[key] for r in rows]
            print(f"  {key:16s} mean {statistics.fmean(values):6.1%}  range {min(values):6.1%} .. {max(values):6.1%}")
        hosts = [abs(r["host"]) for r in rows]
        print(f"  {'|host|':16s} mean {statistics.fmean(hosts):6.1%}  range {min(hosts):6.1%} .. {max(hosts):6.1%}")


if __name__ == "__main__":
    main()
