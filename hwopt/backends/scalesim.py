"""The ``scalesim`` backend: conv/gemm kernels timed on the SCALE-Sim systolic-array emulator.

SCALE-Sim 3.0.0 runs in its own environment (``scalesim_env``) through a
subprocess (``scalesim_worker.py``); it is never imported here.

Mapping of kernels to SCALE-Sim layers (SCALE-Sim has no padding, so the
input it is given is the padded one: ``(out - 1) * stride + kernel``):

- ``conv``: one layer, ``cin`` channels -> ``cout`` filters.
- ``gemm``: a 1x1 conv over ``batch`` rows (ifmap ``batch`` x 1, ``cin``
  channels, ``cout`` filters): the same operand matrices as SCALE-Sim's GEMM
  mode, with one topology format for every layer. A batched MatMul of
  ``groups`` independent products (attention's heads: each head's Q @ K^T
  loads its own K) is one product of ``batch / groups`` rows simulated once
  and run ``groups`` times, as for ``gconv``; its second operand, an
  activation, is loaded as the weights are (the array does not care where
  they came from).
- ``gconv``: one group (``cin/g`` -> ``cout/g``) simulated once, run ``g`` times.
- ``dwconv``: ONE single-channel layer (1 -> ``cout/cin`` filters) simulated
  once, run once per channel; on a target of the ``depthwise = "vector"``
  class (``hwopt.targets.DEPTHWISE_CLASSES``) a depthwise conv runs on the
  vector unit instead (``vector_unit``: K*K MACs per output element over its
  lanes) and is not simulated.

Repeated runs are charged as one pipelined kernel (``pipelined_cycles``): the
array double-buffers, so the next run's operands load while this one
computes. SCALE-Sim reports a layer's ``total_cycles`` from its first DRAM
read to its last DRAM write, i.e. its prefetch, then the folds' compute with
their fill and drain (``compute_cycles``), then the final write-out. ``runs``
repeats cost the prefetch and write-out once and the compute ``runs`` times:
``total + (runs - 1) * compute``, bounded below by all runs' DRAM traffic at
the target's bandwidth. (Until 2026-12 the backend charged ``total * runs``:
every channel of a depthwise conv paid its own prefetch, one after another;
that is what SCALE-Sim's own ``DP`` mode does, one full layer per channel,
and it made grouping depthwise convs look 46-58% faster on npu32 when the
array's gain is 25-30%: estimator/npu32/CARD.md compares both charges with
SCALE-Sim run whole.)

Per-layer results are cached on disk (``$HWOPT_CACHE/scalesim/<hash>.json``,
the hash over the layer spec, the simulator settings and the SCALE-Sim
version), so a warm cache makes a whole model instant; misses run in up to
``workers`` parallel processes (target setting ``workers``, default 2).

Bandwidth: npu32 runs SCALE-Sim in its CALC mode (it reports the DRAM
traffic and assumes the bandwidth the array asks for) and the backend applies
the target's DRAM bandwidth as a roofline: ``max(sim cycles, DRAM bytes /
bandwidth)``. SCALE-Sim's USER mode (enforced bandwidth, stalls) is still
available (``bandwidth_mode = "USER"``) but in 3.0.0 it is unusable for
layers whose weights exceed the filter SRAM: a 1x1280->1000 gemm gave 1.65 M
cycles of which 1.53 M stalls and 52 M DRAM filter reads (41x its 1.28 MB of
weights) after 80 s of simulation; CALC gives 121.6 k compute cycles and
exactly 1.28 M filter reads in 9 s.

Each measurement: ``latency_us`` = (max(pipelined cycles of the runs, DRAM
bytes / bandwidth) + the fused activation's vector-unit cycles) / clock;
``dram_bytes`` = SCALE-Sim's DRAM reads + writes x multiplier (its word is one
byte; SCALE-Sim counts whole bus lines of the array width, so small or
single-channel layers show more traffic than their tensor sizes). Other
kinds are costed by the target's vector-unit model (``vector_unit``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import onnx

from hwopt.backends.base import Measurement, Progress
from hwopt.backends.scalesim_env import SCALESIM_VERSION, ensure_env
from hwopt.io.cache import cache_root, writable_dir
from hwopt.backends.vector_unit import VectorUnit
from hwopt.errors import HwoptError
from hwopt.analysis.kernels import schedule
from hwopt.analysis.kernel import Kernel
from hwopt.targets import Target

WORKER = Path(__file__).with_name("scalesim_worker.py")
ARRAY_KINDS = ("conv", "dwconv", "gconv", "gemm")
# Settings the simulation depends on (anything else in [backend_settings] does not change cycles).
_SIM_KEYS = ("array_rows", "array_cols", "dataflow", "ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb",
             "bandwidth_mode", "dram_bandwidth_words", "request_buffer", "sram_banks", "sram_bank_ports")
_REQUIRED = ("clock_mhz", "array_rows", "array_cols", "dataflow", "ifmap_sram_kb", "filter_sram_kb",
             "ofmap_sram_kb", "dram_bandwidth_words")
_WORD_BYTES = 1  # SCALE-Sim 3.0.0's word size (fixed in single_layer_sim.py)
_CHUNK = 8  # layers per worker process call: bounds a worker's lifetime, keeps both workers busy


@dataclass(frozen=True)
class LayerSpec:
    """One SCALE-Sim conv layer (padded input, as SCALE-Sim has no padding)."""

    ifmap_h: int
    ifmap_w: int
    filter_h: int
    filter_w: int
    channels: int
    num_filters: int
    stride: int


def pipelined_cycles(sim: dict, runs: int) -> int:
    """Cycles of ``runs`` back-to-back runs of one simulated layer on a double-buffered array: SCALE-Sim's
    prefetch and final write-out (its total minus its compute) once, the compute with each fold's fill and
    drain once per run."""
    return int(sim["total_cycles"] + (max(runs, 1) - 1) * sim["compute_cycles"])


def layer_for(kernel: Kernel) -> tuple[LayerSpec, int]:
    """The SCALE-Sim layer simulating a conv/gemm kernel, and how many times it runs."""
    k = kernel
    if k.kind == "gemm":  # one product (of batch / groups rows) simulated once, times the groups
        groups = max(k.groups, 1)
        return LayerSpec(max(k.batch // groups, 1), 1, 1, 1, k.cin, k.cout, 1), groups
    if k.kind not in ("conv", "dwconv", "gconv"):
        raise HwoptError(f"kernel kind {k.kind!r} does not run on the systolic array")
    groups = max(k.groups, 1)
    if k.cin % groups or k.cout % groups:
        raise HwoptError(f"{k.describe()}: channels {k.cin}->{k.cout} not divisible by groups {groups}")
    ifmap_h = (max(k.out_h, 1) - 1) * k.stride + k.kernel
    ifmap_w = (max(k.out_w, 1) - 1) * k.stride + k.kw
    # conv: groups == 1; gconv: one group x groups; dwconv: one channel (cout/cin filters) x channels.
    return LayerSpec(ifmap_h, ifmap_w, k.kernel, k.kw, k.cin // groups, k.cout // groups, k.stride), groups


class ScaleSimBackend:
    """Measures kernels of one target with SCALE-Sim (array) and the vector-unit model (the rest)."""

    name = "scalesim"

    def __init__(self, target: Target, workers: int | None = None, cache_dir: str | Path | None = None) -> None:
        settings = dict(target.backend_settings)
        missing = [key for key in _REQUIRED if key not in settings]
        if missing:
            raise HwoptError(f"target {target.name!r}: [backend_settings] lacks {missing[0]!r}")
        self.target = target
        self.clock_mhz = float(settings["clock_mhz"])
        self.sim_settings = {key: settings[key] for key in _SIM_KEYS if key in settings}
        self.workers = max(1, int(workers if workers is not None else settings.get("workers", 2)))
        # Checked now: an unwritable cache is one line before any simulation, not an error after it.
        self.cache_dir = writable_dir(Path(cache_dir) if cache_dir else cache_root() / "scalesim",
                                      "SCALE-Sim's result cache")
        self.bandwidth = float(settings["dram_bandwidth_words"]) * _WORD_BYTES
        self.vector = VectorUnit(target.vector_unit, target.dtype_bytes)
        # The kinds the array runs on this target's hardware class (a depthwise engine takes dwconv).
        self.array_kinds = tuple(k for k in ARRAY_KINDS if not (k == "dwconv" and target.depthwise == "vector"))
        blob = json.dumps({"settings": self.sim_settings, "scalesim": SCALESIM_VERSION}, sort_keys=True)
        self.settings_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- cache -------------------------------------------------------------------------------
    def cache_path(self, spec: LayerSpec) -> Path:
        blob = json.dumps({"layer": asdict(spec), "settings": self.sim_settings, "scalesim": SCALESIM_VERSION},
                          sort_keys=True)
        return self.cache_dir / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.json"

    def _cached(self, spec: LayerSpec) -> dict | None:
        path = self.cache_path(spec)
        try:
            return json.loads(path.read_text())["result"]
        except (OSError, ValueError, KeyError):
            return None  # missing or damaged (interrupted write): simulate again

    def _store(self, spec: LayerSpec, result: dict) -> None:
        path = self.cache_path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"layer": asdict(spec), "settings": self.sim_settings,
                                   "scalesim": SCALESIM_VERSION, "result": result}, sort_keys=True))
        tmp.replace(path)  # atomic: a reader never sees half a file

    # -- simulation --------------------------------------------------------------------------
    def _run_worker(self, python: Path, specs: list[LayerSpec]) -> list[dict]:
        # -I: isolated from the user's environment variables and site-packages (and hwopt's path).
        request = json.dumps({"settings": self.sim_settings, "layers": [asdict(s) for s in specs]})
        done = subprocess.run([str(python), "-I", str(WORKER)], input=request, capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or ["no output"]
            raise HwoptError(f"SCALE-Sim failed on {asdict(specs[0])}: {lines[-1]}")
        results = json.loads(done.stdout)
        for spec, result in zip(specs, results):
            self._store(spec, result)
        return results

    def simulate(self, specs: Sequence[LayerSpec], progress: Progress | None = None) -> dict[LayerSpec, dict]:
        """SCALE-Sim results of distinct layers: from the cache, the misses simulated in parallel."""
        results: dict[LayerSpec, dict] = {}
        misses = []
        distinct = list(dict.fromkeys(specs))
        for spec in distinct:
            cached = self._cached(spec)
            if cached is None:
                misses.append(spec)
            else:
                results[spec] = cached
        if progress:
            progress(len(results), len(distinct))
        if misses:
            python = ensure_env()
            # Largest first, dealt round-robin into chunks of about _CHUNK layers, so the workers stay
            # busy and finish at about the same time.
            misses.sort(key=lambda s: -(s.ifmap_h * s.ifmap_w * s.channels * s.num_filters))
            chunks = [misses[i::math.ceil(len(misses) / _CHUNK)] for i in range(math.ceil(len(misses) / _CHUNK))]
            with ThreadPoolExecutor(max_workers=min(self.workers, len(chunks))) as pool:
                for chunk, chunk_results in zip(chunks, pool.map(lambda c: self._run_worker(python, c), chunks)):
                    results.update(zip(chunk, chunk_results))
                    if progress:
                        progress(len(results), len(distinct))
        return results

    # -- the Backend protocol ----------------------------------------------------------------
    def measure(self, kernels: Sequence[Kernel], progress: Progress | None = None) -> list[Measurement]:
        """One measurement per kernel, in order; identical kernels share one simulation."""
        array_layers = {k: layer_for(k) for k in dict.fromkeys(kernels) if k.kind in self.array_kinds}
        for k in kernels:  # fail on an unknown op before any (slow) simulation starts
            if k.kind not in self.array_kinds:
                self.vector.cost(k)
        sims = self.simulate([spec for spec, _ in array_layers.values()], progress)
        out = []
        for k in kernels:
            if k.kind in self.array_kinds:
                spec, times = array_layers[k]
                sim = sims[spec]
                act_cycles = self.vector.fused_activation_cycles(k)
                dram = (sim["dram_ifmap_reads"] + sim["dram_filter_reads"] + sim["dram_ofmap_writes"]) * times
                # Bandwidth roofline: in CALC mode SCALE-Sim assumes DRAM delivers what the array asks.
                memory_cycles = math.ceil(dram / self.bandwidth)
                array_cycles = pipelined_cycles(sim, times)
                cycles = max(array_cycles, memory_cycles) + act_cycles
                meta = {"scalesim": SCALESIM_VERSION, "settings_hash": self.settings_hash, "cycles": cycles,
                        "sim_total_cycles": sim["total_cycles"], "sim_compute_cycles": sim["compute_cycles"],
                        "sim_stall_cycles": sim["stall_cycles"], "memory_cycles": memory_cycles, "repeats": times,
                        "act_cycles": act_cycles, "array_cycles": array_cycles, "charge": "pipelined",
                        "mapping_efficiency_pct": round(sim["mapping_efficiency_pct"], 3), "model": "scalesim"}
            else:
                cost = self.vector.cost(k)
                cycles, dram = cost.cycles, cost.dram_bytes
                meta = {"scalesim": SCALESIM_VERSION, "settings_hash": self.settings_hash, "cycles": cycles,
                        "compute_cycles": cost.compute_cycles, "memory_cycles": cost.memory_cycles,
                        "model": "vector_unit"}
                if k.kind == "dwconv":  # a depthwise engine's kernel (hardware class "vector")
                    meta["hardware_class"] = self.target.depthwise
            out.append(Measurement(k, cycles / self.clock_mhz, float(dram), self.name, meta))
        return out


def measure_model_npu32(model: onnx.ModelProto, target: Target | None = None,
                        backend: ScaleSimBackend | None = None,
                        progress: Progress | None = None) -> tuple[float, list[Measurement]]:
    """(total latency in microseconds, one measurement per scheduled kernel) of a canonical model;
    ``progress(done, total)`` over its distinct array layers."""
    if target is None:
        from hwopt.targets import load_target
        target = load_target("npu32")
    backend = backend or ScaleSimBackend(target)
    kernels = [sk.kernel for sk in schedule(model, target.fusion).kernels]
    measurements = backend.measure(kernels, progress)
    return sum(m.latency_us for m in measurements), measurements


if __name__ == "__main__":  # pragma: no cover - a quick manual check: python -m hwopt.backends.scalesim MODEL
    from hwopt.canonical.canonicalize import load_canonical
    _, canonical, _ = load_canonical(sys.argv[1])
    total, ms = measure_model_npu32(canonical)
    for m in ms:
        print(f"{m.latency_us:12.2f} us  {m.kernel.describe()}")
    print(f"total {total:.1f} us")


def simulation_cost(kernel: Kernel) -> float:
    """A relative cost of simulating ``kernel`` (SCALE-Sim time grows with the layer); 0 when not simulated."""
    if kernel.kind not in ARRAY_KINDS:
        return 0.0
    spec, _ = layer_for(kernel)
    return float(spec.ifmap_h * spec.ifmap_w * spec.channels * spec.num_filters)
