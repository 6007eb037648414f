"""hwopt's memory figures against where Vela puts the bytes, on the four Ethos-U targets.

    python -m bench.vela_memory [--out build] [--no-downloads]

hwopt counts, in the target's layout (int8, channels padded to P; ``hwopt.estimator.memory``), the
parameters and the peak of live activations over the fused schedule. Vela reports the SRAM it uses (the
arena: activations it keeps on chip, plus weight buffers) and the off-chip traffic per inference. On
Shared_Sram configurations (U55) the weights stream from flash once per inference and the arena is SRAM,
so the hypothesis is: SRAM used ~ peak activations, off-chip traffic ~ parameters. On Dedicated_Sram
configurations (U65, U85) the arena lives in DRAM with the SRAM as a cache, and activations that do not
stay on chip add to the traffic. Prints per model and target: hwopt's figure, Vela's, and their ratio;
then the median and range of each ratio per memory mode. The models are bench.vela_measure's.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.vela_measure import TARGETS, _models
from hwopt.backends.vela import measure_model
from hwopt.estimator.memory import param_bytes, peak_activation_bytes
from hwopt.analysis.kernels import schedule
from hwopt.canonical.canonicalize import canonicalize
from hwopt.targets import load_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build"))
    parser.add_argument("--no-downloads", action="store_true")
    args = parser.parse_args()
    ratios: dict[str, dict[str, list[float]]] = {}
    print(f"{'model':<50} {'target':<14} {'params KiB':>10} {'Vela off-chip KiB':>17} {'ratio':>6} "
          f"{'peak act KiB':>12} {'Vela SRAM KiB':>13} {'ratio':>6}")
    for name, proto in _models(args.out, not args.no_downloads).items():
        canonical, _ = canonicalize(proto, [], verify=False)  # once per model: the targets share it
        for target_name in TARGETS:
            target = load_target(target_name)
            sched = schedule(canonical, target.fusion)
            params = param_bytes(sched, target.parallelism, 1)
            peak = peak_activation_bytes(sched, target.parallelism, 1)
            meta = measure_model(proto, target).meta
            offchip, sram = meta["offchip_traffic_bytes"], meta["sram_used_bytes"]
            mode = target.backend_settings["memory_mode"]
            ratios.setdefault(mode, {"offchip/params": [], "sram/peak": []})
            ratios[mode]["offchip/params"].append(offchip / params)
            ratios[mode]["sram/peak"].append(sram / peak)
            print(f"{name:<50} {target_name:<14} {params / 1024:>10.1f} {offchip / 1024:>17.1f} "
                  f"{offchip / params:>6.2f} {peak / 1024:>12.1f} {sram / 1024:>13.1f} {sram / peak:>6.2f}", flush=True)
    for mode, figures in ratios.items():
        for what, values in figures.items():
            print(f"{mode}: Vela {what}: median {statistics.median(values):.2f}, range "
                  f"{min(values):.2f}-{max(values):.2f} over {len(values)} model x target pairs")


if __name__ == "__main__":
    main()
