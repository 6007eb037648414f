"""The npu32 backend: real SCALE-Sim runs in its isolated environment, the vector-unit model."""

from __future__ import annotations

import socket
import time

import pytest

import math

from hwopt.backends.scalesim import LayerSpec, ScaleSimBackend, layer_for, pipelined_cycles
from hwopt.backends.scalesim_env import ensure_env, is_ready
from hwopt.backends.vector_unit import VectorUnit
from hwopt.errors import HwoptError
from hwopt.analysis.kernel import Kernel
from hwopt.targets import load_target

TINY = Kernel("conv", 8, 16, 8, 8, 8, 8)  # 8x8x8 -> 16, 1x1


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def target():
    return load_target("npu32")


@pytest.fixture(scope="module")
def scalesim_python():
    """The isolated SCALE-Sim environment (created on first use: about ten seconds)."""
    if not is_ready() and not _pypi_reachable():
        pytest.skip("SCALE-Sim's environment does not exist and PyPI (pip) is unreachable")
    return ensure_env()


def test_env_is_isolated_and_runs_numpy1(scalesim_python):
    import subprocess

    out = subprocess.run([str(scalesim_python), "-c", "import numpy, scalesim; print(numpy.__version__)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("1.")


def test_tiny_conv_is_simulated_deterministically(target, scalesim_python, tmp_path):
    first = ScaleSimBackend(target, cache_dir=tmp_path / "a").measure([TINY])[0]
    second = ScaleSimBackend(target, cache_dir=tmp_path / "b").measure([TINY])[0]  # simulated again
    assert first.meta["model"] == "scalesim" and first.backend == "scalesim"
    assert first.meta["sim_total_cycles"] > 0 and first.latency_us > 0 and first.dram_bytes > 0
    assert first.meta["cycles"] == second.meta["cycles"] and first.dram_bytes == second.dram_bytes
    assert first.meta["scalesim"] == "3.0.0" and first.meta["settings_hash"]


def test_cache_hit_is_instant(target, scalesim_python, tmp_path):
    backend = ScaleSimBackend(target, cache_dir=tmp_path)
    kernel = Kernel("conv", 8, 32, 6, 6, 6, 6, 3, 3, 1)
    start = time.perf_counter()
    cold = backend.measure([kernel])[0]
    cold_s = time.perf_counter() - start
    spec, _ = layer_for(kernel)
    assert backend.cache_path(spec).is_file()
    start = time.perf_counter()
    warm = ScaleSimBackend(target, cache_dir=tmp_path).measure([kernel, kernel])
    warm_s = time.perf_counter() - start
    assert [m.latency_us for m in warm] == [cold.latency_us] * 2
    assert warm_s < cold_s / 5


def test_depthwise_is_one_channel_run_per_channel_pipelined(target, scalesim_python, tmp_path):
    backend = ScaleSimBackend(target, cache_dir=tmp_path)
    dw = Kernel("dwconv", 24, 24, 12, 12, 10, 10, 3, 3, 1, groups=24)
    spec, times = layer_for(dw)
    assert spec == LayerSpec(12, 12, 3, 3, 1, 1, 1) and times == 24
    single = backend.simulate([spec])[spec]
    m = backend.measure([dw])[0]
    # Prefetch and write-out once, each channel's compute (with its fold fill/drain) after the other.
    pipelined = single["total_cycles"] + 23 * single["compute_cycles"]
    assert single["total_cycles"] > single["compute_cycles"] > 0
    assert m.meta["cycles"] == max(pipelined, m.meta["memory_cycles"]) and m.meta["array_cycles"] == pipelined
    assert m.meta["repeats"] == 24 and m.meta["charge"] == "pipelined"


# SCALE-Sim run whole: one layer whose column folds are the runs' folds (each run's filters padded to the
# array's 32 columns), so SCALE-Sim schedules the runs itself; bench/pipelined_charge.py, estimator/npu32/CARD.md.
@pytest.mark.parametrize("kernel", [Kernel("dwconv", 16, 16, 16, 16, 16, 16, 3, 3, groups=16),
                                    Kernel("gconv", 128, 128, 16, 16, 16, 16, 3, 3, groups=4)],
                         ids=["dwconv", "gconv"])
def test_pipelined_charge_against_scalesim_run_whole(target, scalesim_python, tmp_path, kernel):
    backend = ScaleSimBackend(target, cache_dir=tmp_path)
    spec, runs = layer_for(kernel)
    whole = LayerSpec(spec.ifmap_h, spec.ifmap_w, spec.filter_h, spec.filter_w, spec.channels,
                      runs * math.ceil(spec.num_filters / 32) * 32, spec.stride)
    sims = backend.simulate([spec, whole])
    one, big = sims[spec], sims[whole]
    # The runs' compute is SCALE-Sim's compute of the whole layer (same folds, same pixels per fold): 1%.
    assert one["compute_cycles"] * runs == pytest.approx(big["compute_cycles"], rel=0.01)
    # The pipelined charge lies between the whole layer with memory fully overlapped (its compute) and
    # SCALE-Sim's own whole-layer total (all operands loaded before the first fold, outputs flushed after
    # the last); the old charge (total x runs, SCALE-Sim's DP mode) exceeds even that.
    pipelined = pipelined_cycles(one, runs)
    assert big["compute_cycles"] <= pipelined <= big["total_cycles"]
    assert one["total_cycles"] * runs > big["total_cycles"]


def test_grouped_conv_and_gemm_mapping():
    gconv = Kernel("gconv", 32, 64, 14, 14, 7, 7, 3, 3, 2, groups=4)
    assert layer_for(gconv) == (LayerSpec(15, 15, 3, 3, 8, 16, 2), 4)
    assert layer_for(Kernel("gemm", 64, 10, batch=5)) == (LayerSpec(5, 1, 1, 1, 64, 10, 1), 1)
    with pytest.raises(HwoptError, match="groups"):
        layer_for(Kernel("gconv", 30, 64, 8, 8, 8, 8, groups=4))


def test_fused_activation_adds_vector_cycles(target, scalesim_python, tmp_path):
    backend = ScaleSimBackend(target, cache_dir=tmp_path)
    plain, fused = backend.measure([TINY, Kernel("conv", 8, 16, 8, 8, 8, 8, act="hardswish")])
    assert fused.meta["act_cycles"] == 3 * (16 * 8 * 8 // 32)  # hardswish: 3 ops/element, 32 lanes
    assert fused.meta["cycles"] == plain.meta["cycles"] + fused.meta["act_cycles"]


def test_vector_unit_scales_with_elements(target):
    unit = VectorUnit(target.vector_unit, target.dtype_bytes)
    for kind, op in (("eltwise", "Add"), ("act", "Sigmoid"), ("pool", "MaxPool"), ("resize", "Resize"),
                     ("concat", "Concat"), ("softmax", "Softmax"), ("layout", "Transpose"), ("reduce", "ReduceMean")):
        small = Kernel(kind, 16, 16, 8, 8, 8, 8, 3 if kind == "pool" else 1, 3 if kind == "pool" else 1,
                       inputs=2 if kind in ("eltwise", "concat") else 1, op=op)
        large = Kernel(kind, 64, 64, 32, 32, 32, 32, small.kernel, small.kw, inputs=small.inputs, op=op)
        a, b = unit.cost(small), unit.cost(large)
        assert 0 < a.cycles < b.cycles and 0 < a.dram_bytes < b.dram_bytes, kind
    # Overhead-only floor, then the larger of compute and memory.
    add = unit.cost(Kernel("eltwise", 32, 32, 32, 32, 32, 32, inputs=2, op="Add"))
    assert add.cycles == max(add.compute_cycles, add.memory_cycles) + 64
    assert add.dram_bytes == 3 * 32 * 32 * 32  # two inputs read, one output written, int8


def test_depthwise_engine_costs_depthwise_by_the_vector_formula(scalesim_python, tmp_path):
    engine = load_target("npu32-dw")
    assert engine.depthwise == "vector" and load_target("npu32").depthwise == "array"
    backend = ScaleSimBackend(engine, cache_dir=tmp_path)
    dw = Kernel("dwconv", 32, 32, 28, 28, 28, 28, 3, 3, groups=32, act="relu6")
    (m,) = backend.measure([dw])
    lanes = engine.vector_unit["lanes"]
    compute = math.ceil(32 * 28 * 28 / lanes) * 9  # K*K MACs per output element over the lanes
    memory = math.ceil((2 * 32 * 28 * 28 + 32 * 9 + 32) / engine.vector_unit["bandwidth_bytes_per_cycle"])
    act = math.ceil(32 * 28 * 28 / lanes)  # relu6: 1 op per element
    assert m.meta["model"] == "vector_unit" and m.meta["hardware_class"] == "vector"
    assert m.meta["cycles"] == max(compute, memory) + engine.vector_unit["launch_overhead_cycles"] + act
    assert not list(tmp_path.glob("*.json"))  # not simulated


def test_grouping_depthwise_is_slower_with_a_depthwise_engine(scalesim_python, tmp_path):
    """dw-to-grouped's kernels cost more than the depthwise conv on npu32-dw, less on npu32 (array-only)."""
    dw = Kernel("dwconv", 32, 32, 28, 28, 28, 28, 3, 3, groups=32)
    grouped = [Kernel("gconv", 32, 32, 28, 28, 28, 28, 3, 3, groups=32 // n) for n in (8, 16)]
    for name, slower in (("npu32-dw", True), ("npu32", False)):
        backend = ScaleSimBackend(load_target(name), cache_dir=tmp_path)
        base, *options = backend.measure([dw] + grouped)
        assert all((o.latency_us > base.latency_us) == slower for o in options), name


def test_view_is_free_and_unknown_raises(target, tmp_path):
    backend = ScaleSimBackend(target, cache_dir=tmp_path)
    (view,) = backend.measure([Kernel("view", 100, 100, op="Reshape")])
    assert view.latency_us == 0 and view.dram_bytes == 0
    with pytest.raises(HwoptError, match="NonMaxSuppression"):
        backend.measure([TINY, Kernel("unknown", 4, 4, op="NonMaxSuppression")])


def test_bad_target_settings_are_one_line_errors(target):
    from dataclasses import replace

    with pytest.raises(HwoptError, match="clock_mhz"):
        ScaleSimBackend(replace(target, backend_settings={"array_rows": 32}))
    with pytest.raises(HwoptError, match="lanes"):
        VectorUnit({}, 1)


def test_measure_npu32_says_its_stages_in_a_log(scalesim_python, tmp_path):
    """`hwopt measure -t npu32` in a log (stderr a pipe): a line per stage, with the emulated layers counted;
    stdout only the result."""
    import subprocess
    import sys
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    w = numpy_helper.from_array(np.ones((16, 8, 1, 1), np.float32), "w")
    w2 = numpy_helper.from_array(np.ones((8, 16, 3, 3), np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["h"], name="c1"), helper.make_node("Relu", ["h"], ["r"], name="r1"),
         helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w, w2])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    done = subprocess.run([sys.executable, "-m", "hwopt.cli", "measure", str(path), "-t", "npu32"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert done.returncode == 0, done.stderr
    assert " on npu32" in done.stdout and done.stdout.count("\n") == 1
    lines = done.stderr.splitlines()
    assert any(line.startswith("canonicalising: 1/1, ") for line in lines), lines
    assert any(line.startswith("SCALE-Sim: 2/2, ") for line in lines), lines


def test_building_the_emulator_is_said(tmp_path, capsys):
    """Built on first use, even quietly: one line says so (here the build fails at once: no folder)."""
    from hwopt.backends.scalesim_env import _create

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(HwoptError, match="cannot create SCALE-Sim's environment"):
        _create(blocker / "venv", quiet=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "building the SCALE-Sim emulator's environment" in err
