"""How well the cpu backend's repeated medians agree, for each way of combining a kernel's sessions.

    python -m bench.cpu_repeatability [--rounds 3] [--statistics mean,trimmed] [--count 20]

Each round measures the same sweep kernels twice with every statistic in turn
(A/B interleaved, so a spell of host noise hits all of them alike) and prints
the largest and median relative difference between the two passes, of the raw
medians and of the net latencies (raw minus the isolated session's boundary).
Kernels under 20 us are left out of the relative figures (as in cpu_figures).

Measured 2026-11-25 13:15-13:20 (noisy host, nothing of ours running), six
rounds on 20 kernels, raw max: mean 12.5/13.2/10.5/13.0/8.8/7.1%, trimmed
5.7/5.6/2.7/5.7/7.2/24.6%; a seventh with this script (13:24): mean 17.9%,
trimmed 10.2%. Quiet hours earlier, the mean gave 2.4-5.4%.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from bench.cpu_figures import repeatability
from hwopt.backends.ort_cpu import OrtBackend
from hwopt.targets import load_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--statistics", default="mean,trimmed")
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    backend = OrtBackend(load_target("cpu"))
    base = backend.settings
    for round_index in range(args.rounds):
        for statistic in args.statistics.split(","):
            backend.settings = replace(base, session_statistic=statistic)
            result = repeatability(backend, count=args.count)
            print(f"round {round_index + 1} {statistic:8s} " + " | ".join(
                f"{which}: max {result[which]['max_rel_diff']:.1%} median {result[which]['median_rel_diff']:.1%}"
                for which in ("raw", "net")), flush=True)


if __name__ == "__main__":
    main()
