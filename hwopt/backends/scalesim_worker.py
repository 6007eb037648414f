"""Runs SCALE-Sim on a list of conv layers and prints the results as JSON.

This script runs INSIDE the isolated SCALE-Sim environment (see
``hwopt.backends.scalesim_env``): it must not import hwopt, only the standard
library and scalesim. Input (stdin, JSON)::

    {"settings": {...backend settings...},
     "layers": [{"ifmap_h", "ifmap_w", "filter_h", "filter_w", "channels", "num_filters", "stride"}, ...]}

``ifmap_h``/``ifmap_w`` are the *padded* input sizes: SCALE-Sim has no
padding and computes ofmap = (ifmap - filter) // stride + 1.

Output (stdout, JSON): one object per layer, in order, with SCALE-Sim's own
report figures: ``total_cycles`` (its "Total Cycles (incl. prefetch)": from
the first DRAM read to the last DRAM write), ``compute_cycles`` (its "Total
Cycles": the array's cycles including stalls), ``stall_cycles``, the SRAM
reads/writes and the DRAM reads/writes in words (word size 1 byte in
SCALE-Sim 3.0.0), and utilisation/mapping efficiency in percent.

The layer names never contain ``DP``: SCALE-Sim would split such a layer
into one single-channel layer per channel, which the caller avoids on
purpose (it simulates one channel and charges the runs pipelined). Only a
layer with ``"scalesim_dp": true`` (the comparison in
``bench/pipelined_charge.py``) is named ``DP``, and its result is the sum over
SCALE-Sim's per-channel layers: its own depthwise handling.
"""

import contextlib
import json
import os
import sys
import tempfile

# This file sits beside hwopt's own scalesim.py, which would shadow the scalesim package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _config_text(s: dict) -> str:
    bandwidth = int(s["dram_bandwidth_words"])
    user = s.get("bandwidth_mode", "USER").upper()
    # No [network_presets]: SCALE-Sim 3.0.0 reads TopologyCsvLoc from the wrong section when it is
    # present; the topology and layout paths are passed to it directly instead.
    # In USER mode SCALE-Sim 3.0.0 feeds the ifmap/filter SRAMs at the [layout]
    # bank bandwidth and drains the ofmap SRAM at [architecture_presets] Bandwidth,
    # so both carry the same DRAM bandwidth.
    return f"""[general]
run_name = hwopt

[architecture_presets]
ArrayHeight : {int(s["array_rows"])}
ArrayWidth : {int(s["array_cols"])}
IfmapSramSzkB : {int(s["ifmap_sram_kb"])}
FilterSramSzkB : {int(s["filter_sram_kb"])}
OfmapSramSzkB : {int(s["ofmap_sram_kb"])}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : {bandwidth}
Dataflow : {s["dataflow"]}
MemoryBanks : 1
ReadRequestBuffer : {int(s.get("request_buffer", 512))}
WriteRequestBuffer : {int(s.get("request_buffer", 512))}

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : {bandwidth}
IfmapSRAMBankNum : {int(s.get("sram_banks", 1))}
IfmapSRAMBankPort : {int(s.get("sram_bank_ports", 2))}
FilterCustomLayout : False
FilterSRAMBankBandwidth : {bandwidth}
FilterSRAMBankNum : {int(s.get("sram_banks", 1))}
FilterSRAMBankPort : {int(s.get("sram_bank_ports", 2))}

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : {user}
UseRamulatorTrace : False
"""


def _write_inputs(folder: str, settings: dict, layers: list) -> tuple:
    topology = os.path.join(folder, "topology.csv")
    layout = os.path.join(folder, "layout.csv")
    config = os.path.join(folder, "hwopt.cfg")
    with open(topology, "w") as handle:
        handle.write("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                     "Num Filter, Strides,\n")
        for i, L in enumerate(layers):
            name = f"DP{i}" if L.get("scalesim_dp") else f"L{i}"
            handle.write(f"{name}, {L['ifmap_h']}, {L['ifmap_w']}, {L['filter_h']}, {L['filter_w']}, "
                         f"{L['channels']}, {L['num_filters']}, {L['stride']},\n")
    # SCALE-Sim always loads a layout file, even with custom layouts off (then it is not used).
    # Columns: name, ifmap intraline factor (h, w), filter factor (h, w), channel factor,
    # filter-count factor, strides, ifmap intraline order (3), ifmap interline order (3),
    # filter intraline order (4), filter interline order (4).
    with open(layout, "w") as handle:
        handle.write("Layer name, IFMAP H factor, IFMAP W factor, Filter H factor, Filter W factor, "
                     "Channel factor, Num Filter factor, Strides, IFMAP intraline order, , , "
                     "IFMAP interline order, , , Filter intraline order, , , , Filter interline order, , , ,\n")
        for i, L in enumerate(layers):
            name = f"DP{i}" if L.get("scalesim_dp") else f"L{i}"
            handle.write(f"{name}, 1, 1, 1, 1, {L['channels']}, {L['num_filters']}, {L['stride']}, "
                         "0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3,\n")
    with open(config, "w") as handle:
        handle.write(_config_text(settings))
    return config, topology, layout


def _simulate_one(settings: dict, layer: dict) -> dict:
    from scalesim.scale_sim import scalesim  # imported here: only inside the SCALE-Sim venv

    with tempfile.TemporaryDirectory(prefix="hwopt-scalesim-") as folder:
        config, topology, layout = _write_inputs(folder, settings, [layer])
        # SCALE-Sim prints banners and progress on stdout; stdout carries our JSON only.
        with contextlib.redirect_stdout(sys.stderr):
            sim = scalesim(save_disk_space=True, verbose=False, config=config, topology=topology,
                           layout=layout)
            sim.run_scale(top_path=folder)
        results = sim.runner.single_layer_sim_object_list
        if layer.get("scalesim_dp"):  # SCALE-Sim's depthwise mode: one full layer per channel, summed
            items = [r.get_compute_report_items() for r in results]
            return {"total_cycles": sum(int(i[0]) for i in items), "compute_cycles": sum(int(i[1]) for i in items),
                    "stall_cycles": sum(int(i[2]) for i in items), "layers": len(results),
                    "dram_ifmap_reads": sum(int(r.ifmap_dram_reads) for r in results),
                    "dram_filter_reads": sum(int(r.filter_dram_reads) for r in results),
                    "dram_ofmap_writes": sum(int(r.ofmap_dram_writes) for r in results)}
        (result,) = results
        overall, compute, stall, util, mapping, _compute_util = result.get_compute_report_items()
        return {
            "total_cycles": int(overall),
            "compute_cycles": int(compute),
            "stall_cycles": int(stall),
            "utilization_pct": float(util),
            "mapping_efficiency_pct": float(mapping),
            "sram_ifmap_reads": int(result.ifmap_sram_reads),
            "sram_filter_reads": int(result.filter_sram_reads),
            "sram_ofmap_writes": int(result.ofmap_sram_writes),
            "dram_ifmap_reads": int(result.ifmap_dram_reads),
            "dram_filter_reads": int(result.filter_dram_reads),
            "dram_ofmap_writes": int(result.ofmap_dram_writes),
        }


def simulate(settings: dict, layers: list) -> list:
    """One SCALE-Sim run per layer: SCALE-Sim keeps every layer's matrices of a run in memory,
    so separate runs bound the worker's memory, and a layer's numbers never depend on which
    other layers shared its batch (the caller caches them one by one)."""
    return [_simulate_one(settings, layer) for layer in layers]


def main() -> int:
    request = json.load(sys.stdin)
    results = simulate(request["settings"], request["layers"])
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
