"""The channel step of each Ethos-U target: NPU cycles of a 1x1 conv (64 -> cout channels, 28x28, int8)
as compiled by Vela, for cout = 1..64, and the period of the staircase (the target's parallelism P).

    python -m bench.vela_channel_step [TARGET ...]
"""

from __future__ import annotations

import sys

from hwopt.analysis.kernel import Kernel
from hwopt.backends.vela import VelaBackend
from hwopt.targets import load_target

TARGETS = ["ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256"]


def step(cycles: dict[int, float]) -> int:
    """The period p of the staircase: the largest p whose rises at cout = k*p + 1 are each more than twice
    every other rise (within a step the cycles still creep up a little: writing the extra channels)."""
    rise = {c: cycles[c] - cycles[c - 1] for c in sorted(cycles)[1:]}
    for p in (64, 32, 16, 8, 4, 2):
        jumps = [d for c, d in rise.items() if (c - 1) % p == 0]
        others = [d for c, d in rise.items() if (c - 1) % p != 0]
        if jumps and others and min(jumps) > 2 * max(others):
            return p
    return 1


def main(names: list[str]) -> None:
    for name in names or TARGETS:
        backend = VelaBackend(load_target(name))
        kernels = [Kernel("conv", 64, c, 28, 28, 28, 28, 1, 1, dtype_bytes=1) for c in range(1, 65)]
        cycles = {k.cout: m.meta["cycles_npu"] for k, m in zip(kernels, backend.measure(kernels))}
        print(f"{name}: channel step {step(cycles)}; NPU cycles at cout 8/9/16/17/32/33: "
              + " ".join(f"{cycles[c]:.0f}" for c in (8, 9, 16, 17, 32, 33)))


if __name__ == "__main__":
    main(sys.argv[1:])
