"""The vela backend: real ONNX exports written as TFLite and compiled by the real Vela 5.2.0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwopt.analysis.kernel import Kernel
from hwopt.backends import get_backend, model_measurer
from hwopt.backends.vela import VelaSettings, compile_tflite, measure_model
from hwopt.errors import HwoptError
from hwopt.targets import load_target, shipped_targets

pytest.importorskip("ethosu.vela")

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
UNET = DATA / "torch_unet_db_head_convtranspose.onnx"
CONFIGS = ["ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWOPT_CACHE", str(tmp_path_factory.getbasetemp() / "hwopt-cache"))


def hwopt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("HWOPT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "hwopt.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)


def _one_line_exit_2(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("hwopt: error: "), done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_the_four_targets_are_shipped_with_their_vela_settings() -> None:
    assert set(CONFIGS) <= set(shipped_targets())
    for name in CONFIGS:
        target = load_target(name)
        settings = VelaSettings.from_target(target)
        assert target.backend == "vela" and settings.accelerator_config == name
        ini = settings.config_file().read_text()
        assert f"[System_Config.{settings.system_config}]" in ini and f"[Memory_Mode.{settings.memory_mode}]" in ini


@pytest.mark.parametrize("name", CONFIGS)
def test_whole_model_on_each_configuration(name: str) -> None:
    result = model_measurer(load_target(name))(UNET, load_target(name))
    meta = result.meta
    assert result.backend == "vela" and result.latency_us > 0
    assert meta["cycles_total"] >= meta["cycles_npu"] > 0
    assert meta["latency_us"] == pytest.approx(meta["cycles_total"] / meta["clock_hz"] * 1e6, rel=1e-3)
    assert meta["sram_used_bytes"] > 0 and meta["offchip_traffic_bytes"] > 0
    assert meta["cpu_operators"] == 0 and meta["npu_operators"] > 0
    assert meta["calibration"] == "random"
    # Every NPU layer of Vela's report maps back to ONNX nodes of the canonical model.
    layers = [layer for layer in meta["layers"] if layer["target"] == "NPU"]
    assert layers and all(layer["onnx_nodes"] for layer in layers), [l["name"] for l in layers if not l["onnx_nodes"]]
    assert {node for layer in layers for node in layer["onnx_nodes"]} >= {"/up1/ConvTranspose", "/side/ConvTranspose"}


def test_more_macs_per_cycle_is_faster_and_results_are_cached() -> None:
    small, big = (measure_model(UNET, load_target(name)) for name in ("ethos-u55-128", "ethos-u55-256"))
    assert small.meta["cycles_npu"] > big.meta["cycles_npu"]
    again = measure_model(UNET, load_target("ethos-u55-256"))
    assert again.meta["cached"] and again.meta["cycles_total"] == big.meta["cycles_total"]


def test_measure_command_prints_vela_figures() -> None:
    done = hwopt("measure", "-t", "ethos-u55-256", str(DATA / "torch_dynamo_mobilenet_v3_small_w025.onnx"))
    assert done.returncode == 0, done.stderr
    for words in ("on ethos-u55-256:", "Vela 5.2.0", "cycles", "on the NPU", "SRAM used", "off-chip traffic",
                  "random inputs"):
        assert words in done.stdout, done.stdout
    done = hwopt("measure", "-t", "ethos-u85-256", "--json", str(UNET))
    meta = json.loads(done.stdout)["meta"]
    assert {"cycles_npu", "cycles_total", "sram_used_bytes", "offchip_traffic_bytes", "layers"} <= set(meta)


def test_no_estimator_yet_is_one_line(tmp_path: Path) -> None:
    # Every shipped Ethos-U target has an estimator now: a target file of one's own has none beside it.
    toml = tmp_path / "my-u55.toml"
    toml.write_text((ROOT / "estimator" / "ethos-u55-128" / "target.toml").read_text()
                    .replace('name = "ethos-u55-128"', 'name = "my-u55"'))
    _one_line_exit_2(hwopt("estimate", "-t", str(toml), str(UNET)), "has no trained estimator")
    # optimize does not fall back to summing single-kernel Vela compiles (Vela schedules whole models).
    _one_line_exit_2(hwopt("optimize", "-t", str(toml), str(UNET), "-o", str(tmp_path / "unused.onnx")),
                     "has no trained estimator yet, and its judge (vela) schedules whole models")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_configuration_estimates(name: str) -> None:
    done = hwopt("estimate", "-t", name, str(UNET))
    assert done.returncode == 0, done.stderr
    assert "ms" in done.stdout or "us" in done.stdout, done.stdout


def test_missing_vela_is_one_line(tmp_path: Path) -> None:
    text = (ROOT / "estimator" / "ethos-u55-256" / "target.toml").read_text()
    toml = tmp_path / "no-vela.toml"
    toml.write_text(text.replace('name = "ethos-u55-256"', 'name = "no-vela"')
                    + 'vela = "/nonexistent/bin/vela"\n')
    with pytest.raises(HwoptError, match="the Vela executable '/nonexistent/bin/vela'"):
        measure_model(UNET, load_target(toml))
    _one_line_exit_2(hwopt("measure", "-t", str(toml), str(UNET)), "Vela executable '/nonexistent/bin/vela'")


def test_unconvertible_op_is_one_line_before_vela(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["t"], name="conv"), helper.make_node("Erf", ["t"], ["y"], name="erf")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")])
    path = tmp_path / "erf.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    _one_line_exit_2(hwopt("measure", "-t", "ethos-u55-256", str(path)), "node 'erf' (Erf)")


def test_vela_failing_on_a_model_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"TFL3" + b"\x00" * 64)
    settings = VelaSettings.from_target(load_target("ethos-u55-256"))
    with pytest.raises(HwoptError, match=r"^Vela failed on broken.tflite \(ethos-u55-256, exit \d+\): ") as failure:
        compile_tflite(broken, settings)
    assert "\n" not in str(failure.value)


def test_backend_measures_kernels_one_by_one() -> None:
    backend = get_backend(load_target("ethos-u55-256"))
    conv = Kernel("conv", 32, 64, 28, 28, 28, 28, 1, 1, act="relu", dtype_bytes=1)
    dw = Kernel("dwconv", 64, 64, 28, 28, 28, 28, 3, 3, groups=64, act="relu6", dtype_bytes=1)
    view = Kernel("view", 64, 64, op="Reshape", dtype_bytes=1)
    measured = backend.measure([conv, dw, view])
    assert [m.kernel for m in measured] == [conv, dw, view]
    assert all(m.backend == "vela" for m in measured)
    assert measured[0].latency_us > 0 and measured[0].meta["npu_operators"] == 1 and measured[0].dram_bytes > 0
    assert measured[1].latency_us > 0 and measured[2].latency_us == 0.0


def test_worker_gives_the_subprocess_cycles_and_survives_a_failure(tmp_path: Path) -> None:
    """The long-lived Vela process (vela_worker) compiles what a new process per compile does, to the cycle,
    in any order, and a model Vela refuses fails alone: the next compile in the same worker still works."""
    import dataclasses

    from hwopt.backends.kernel_models import kernel_model
    from hwopt.tflite.writer import write_tflite

    base = dataclasses.replace(VelaSettings.from_target(load_target("ethos-u85-256")), cache=False)
    kernels = [Kernel("conv", 32, 64, 28, 28, 28, 28, 1, 1, act="relu", dtype_bytes=1),
               Kernel("dwconv", 64, 64, 28, 28, 14, 14, 3, 3, stride=2, groups=64, act="relu6", dtype_bytes=1),
               Kernel("conv", 64, 96, 14, 14, 14, 14, 3, 3, groups=4, dtype_bytes=1)]
    paths = [write_tflite(kernel_model(k), tmp_path / f"k{i}.tflite").path for i, k in enumerate(kernels)]
    fields = ("cycles_total", "cycles_npu", "sram_used_bytes", "offchip_traffic_bytes", "npu_operators")

    def figures(path: Path, worker: bool) -> tuple:
        result = compile_tflite(path, dataclasses.replace(base, worker=worker))
        return tuple(getattr(result, f) for f in fields)

    alone = [figures(p, worker=False) for p in paths]
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"TFL3" + b"\0" * 60)
    with pytest.raises(HwoptError, match="Vela failed on broken.tflite"):
        compile_tflite(broken, base)
    assert [figures(p, worker=True) for p in reversed(paths)] == alone[::-1]
    assert figures(paths[0], worker=True) == alone[0]


def test_dedicated_sram_targets_store_a_lone_kernels_npu_cycles() -> None:
    """ethos-u85-256 (Dedicated_Sram): a kernel compiled alone pays DRAM I/O a model keeps in SRAM, so its row
    is its NPU cycles; ethos-u55-256 keeps Vela's whole latency. A bad kernel_figure is one line."""
    import dataclasses

    conv = Kernel("conv", 32, 64, 28, 28, 28, 28, 1, 1, act="relu", dtype_bytes=1)
    u85 = get_backend(load_target("ethos-u85-256")).measure([conv])[0]
    assert u85.meta["kernel_figure"] == "npu"
    assert u85.latency_us == pytest.approx(u85.meta["cycles_npu"] / u85.meta["clock_hz"] * 1e6)
    assert 0 < u85.latency_us < u85.meta["latency_us"]
    u55 = get_backend(load_target("ethos-u55-256")).measure([conv])[0]
    assert u55.meta["kernel_figure"] == "latency" and u55.latency_us == u55.meta["latency_us"]
    with pytest.raises(HwoptError, match="kernel_figure 'cycles': choose one of latency, npu"):
        dataclasses.replace(VelaSettings.from_target(load_target("ethos-u85-256")), kernel_figure="cycles")
