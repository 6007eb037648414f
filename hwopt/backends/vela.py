"""The ``vela`` backend: Arm Ethos-U NPUs, measured by Arm's own compiler, Vela (``ethos-u-vela``).

A model is written as int8 TFLite by hwopt itself (``hwopt.tflite``: no TensorFlow; activation ranges
from calibration samples, or seeded random inputs, which Vela's figures do not depend on) and compiled
by Vela for the target's accelerator configuration, system configuration and memory mode
(``[backend_settings]``: ``accelerator_config``, ``system_config``, ``memory_mode``; ``config``, the
Vela .ini, defaults to the ``Arm/vela.ini`` shipped in the Vela wheel; ``vela``, an executable to run
instead of this Python's ``ethosu.vela``). Vela's performance estimator is the truth here: with
``--verbose-performance`` it writes ``<name>_summary_<system>.csv`` (inference time, total and NPU
cycles, memory used, bytes moved per memory) and ``<name>_per-layer.csv`` (cycles, accesses and MACs
per layer, named by the layer's output tensor, which the writer names after the ONNX tensor, so each
row maps back to ONNX nodes).

Vela schedules across layers (cascading, weight buffering), so the whole model compiled at once is the
measurement (``measure_model``); ``VelaBackend.measure`` compiles one single-kernel model per kernel
(``kernel_models``), what a ``hwopt profile`` sweep measures. Vela runs in a long-lived child process
of this Python (``vela_worker``: Vela imported once, ~0.12 s per kernel instead of ~1.3 s with a new
process each; a crash or a hang of its C++ core cannot take hwopt down; ``timeout_s`` bounds it;
``worker = false`` or an own ``vela`` executable: a new process per compile) in a temporary folder, and its parsed result is cached by the hash of the TFLite bytes, the settings and Vela's version
(``$HWOPT_CACHE/vela``): Vela is deterministic, so a cached result is the result.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import onnx

from hwopt.analysis.kernel import Kernel
from hwopt.backends.base import Measurement, Progress
from hwopt.errors import HwoptError
from hwopt.targets import Target

NAME = "vela"
INSTALL = "pip install ethos-u-vela==5.2.0"  # a core dependency: missing only from a broken install
_REQUIRED = ("accelerator_config", "system_config", "memory_mode")


def vela_version() -> str | None:
    """The installed ethos-u-vela's version, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ethos-u-vela")
    except PackageNotFoundError:
        return None


def shipped_config() -> Path:
    """The ``Arm/vela.ini`` inside the installed Vela wheel (system configurations and memory modes)."""
    import importlib.util

    spec = importlib.util.find_spec("ethosu")
    if spec is None or not spec.submodule_search_locations:
        raise HwoptError(f"Vela (ethos-u-vela) is not installed: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "config_files" / "Arm" / "vela.ini"
    if not path.is_file():
        raise HwoptError(f"the installed Vela has no {path.name} at {path}")
    return path


# A kernel compiled alone, as a one-operator model, has its input and output as model I/O. Shared_Sram
# (U55): the arena is in SRAM as in a whole model, and the weights stream from flash either way, so the
# kernel's whole latency is its cost in a model (the in-model term's scale came out 0.87 on 16 models).
# Dedicated_Sram (U65, U85): the arena is in DRAM with SRAM as its cache; a lone kernel reads its input
# and writes its output in DRAM, which a model mostly keeps in SRAM between layers (cascading): on
# ethos-u85-256 the sum of lone kernels' latencies was 2-4x the whole model (scale 0.26, 13.5% median
# error on 16 models); their NPU cycles summed fit it with scale 1.14, 4.1% median error.
KERNEL_FIGURES = {
    "latency": lambda r: r.latency_us,  # Vela's inference time of the one-kernel model
    "npu": lambda r: r.cycles_npu / r.clock_hz * 1e6 if r.clock_hz else r.latency_us,  # its NPU cycles only
}


@dataclass(frozen=True)
class VelaSettings:
    accelerator_config: str
    system_config: str
    memory_mode: str
    config: str = ""  # a Vela .ini; "" = the wheel's Arm/vela.ini
    vela: str = ""  # an executable; "" = this Python's ethosu.vela
    optimise: str = "Performance"
    timeout_s: float = 600.0
    cache: bool = True
    worker: bool = True  # compile in a long-lived Vela process (vela_worker); False: a new process each time
    # What a single kernel's row holds (KERNEL_FIGURES): the kernel compiled alone pays what a whole model
    # does not, and which part depends on the memory mode (see KERNEL_FIGURES).
    kernel_figure: str = "latency"

    @classmethod
    def from_target(cls, target: Target) -> "VelaSettings":
        s = target.backend_settings
        missing = [key for key in _REQUIRED if not isinstance(s.get(key), str) or not s.get(key)]
        if missing:
            raise HwoptError(f"{target.name}: [backend_settings] lacks {', '.join(missing)} (the Vela "
                             "accelerator config, system config and memory mode)")
        try:
            return cls(s["accelerator_config"], s["system_config"], s["memory_mode"], str(s.get("config", "")),
                       str(s.get("vela", "")), str(s.get("optimise", "Performance")),
                       float(s.get("timeout_s", 600.0)), bool(s.get("cache", True)),
                       bool(s.get("worker", True)), str(s.get("kernel_figure", "latency")))
        except (TypeError, ValueError) as exc:
            raise HwoptError(f"{target.name}: bad [backend_settings] value ({exc})") from None

    def __post_init__(self) -> None:
        if self.kernel_figure not in KERNEL_FIGURES:
            raise HwoptError(f"backend_settings.kernel_figure {self.kernel_figure!r}: choose one of "
                             f"{', '.join(KERNEL_FIGURES)}")

    def command(self) -> list[str]:
        """How Vela is started; refused in one line when it is not there."""
        if self.vela:
            found = shutil.which(self.vela)
            if found is None:
                raise HwoptError(f"the Vela executable {self.vela!r} (backend_settings.vela) was not found; "
                                 f"install Vela ({INSTALL}) or fix the path")
            return [found]
        if vela_version() is None:
            raise HwoptError(f"Vela (ethos-u-vela) is not installed: {INSTALL}")
        return [sys.executable, "-m", "ethosu.vela"]

    def config_file(self) -> Path:
        if not self.config:
            return shipped_config()
        path = Path(self.config).expanduser()
        if not path.is_file():
            raise HwoptError(f"the Vela config file {self.config!r} (backend_settings.config) does not exist")
        return path

    def arguments(self) -> list[str]:
        return ["--accelerator-config", self.accelerator_config, "--config", str(self.config_file()),
                "--system-config", self.system_config, "--memory-mode", self.memory_mode,
                "--optimise", self.optimise, "--verbose-performance"]


@dataclass
class VelaLayer:
    """One row of Vela's per-layer report, with the ONNX nodes it came from."""

    name: str  # the layer's output tensor (an ONNX tensor name where the writer kept one)
    operator: str  # the TFLite operator as Vela read it ("Original Operator")
    lowered: str  # what Vela made of it ("NNG Operator")
    target: str  # NPU | CPU
    cycles: float
    npu_cycles: float
    sram_access_cycles: float
    offchip_access_cycles: float  # DRAM + on-/off-chip flash
    macs: float
    mac_utilisation: float  # percent
    onnx_nodes: list[str] = field(default_factory=list)


@dataclass
class VelaResult:
    """What Vela says of one compiled model."""

    latency_us: float
    cycles_total: float
    cycles_npu: float
    clock_hz: float
    sram_used_bytes: float
    offchip_used_bytes: float  # weights (and, Dedicated_Sram, the arena) placed off chip
    offchip_traffic_bytes: float  # bytes read and written to DRAM and flash per inference
    sram_traffic_bytes: float
    macs: float
    npu_operators: int
    cpu_operators: int
    layers: list[VelaLayer] = field(default_factory=list)
    vela_s: float = 0.0  # Vela's own wall time (0 when cached)
    cached: bool = False

    def to_meta(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "layers"}


def _float(row: dict, key: str) -> float:
    try:
        return float(row.get(key) or 0.0)
    except ValueError:
        return 0.0


def parse_summary(path: Path, stdout: str) -> dict[str, float]:
    """The figures hwopt keeps from ``<name>_summary_<system>.csv`` (one row) and Vela's stdout."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise HwoptError(f"Vela wrote an empty summary ({path.name})")
    row = rows[0]
    kib = 1024.0
    ops = {kind: int(m.group(1)) for kind in ("CPU", "NPU")
           for m in [re.search(rf"^{kind} operators = (\d+)", stdout, re.MULTILINE)] if m}
    return {
        "latency_us": _float(row, "inference_time") * 1e6,
        "cycles_total": _float(row, "cycles_total"),
        "cycles_npu": _float(row, "cycles_npu"),
        "clock_hz": _float(row, "core_clock"),
        "sram_used_bytes": _float(row, "sram_memory_used") * kib,
        "offchip_used_bytes": (_float(row, "dram_memory_used") + _float(row, "off_chip_flash_memory_used")) * kib,
        "offchip_traffic_bytes": (_float(row, "dram_total_bytes") + _float(row, "off_chip_flash_total_bytes")
                                  + _float(row, "on_chip_flash_total_bytes")),
        "sram_traffic_bytes": _float(row, "sram_total_bytes"),
        "macs": _float(row, "nn_macs"),
        "npu_operators": ops.get("NPU", 0),
        "cpu_operators": ops.get("CPU", 0),
    }


def parse_layers(path: Path) -> list[VelaLayer]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [VelaLayer(name=row.get("Name", ""), operator=row.get("Original Operator", ""),
                          lowered=row.get("NNG Operator", ""), target=row.get("Target", ""),
                          cycles=_float(row, "Op Cycles"), npu_cycles=_float(row, "NPU"),
                          sram_access_cycles=_float(row, "SRAM AC"),
                          offchip_access_cycles=(_float(row, "DRAM AC") + _float(row, "OnFlash AC")
                                                 + _float(row, "OffFlash AC")),
                          macs=_float(row, "MAC Count"), mac_utilisation=_float(row, "Util% (MAC)"))
                for row in csv.DictReader(f)]


def map_layers(layers: list[VelaLayer], onnx_layers: dict[str, tuple[str, ...]]) -> None:
    """Each Vela layer's ONNX nodes: by its tensor name, else by the longest written tensor name it starts
    with (Vela names tensors it adds after the one they come from, e.g. ``..._intermediate``)."""
    names = sorted(onnx_layers, key=len, reverse=True)
    for layer in layers:
        if layer.name in onnx_layers:
            layer.onnx_nodes = list(onnx_layers[layer.name])
            continue
        for name in names:
            if layer.name.startswith(name):
                layer.onnx_nodes = list(onnx_layers[name])
                break


def _cache_file(settings: VelaSettings, data: bytes) -> Path | None:
    if not settings.cache:
        return None
    from hwopt.io.cache import cache_root

    key = hashlib.sha256()
    key.update(data)
    key.update(json.dumps([settings.arguments(), settings.vela, vela_version()], sort_keys=True).encode())
    key.update(settings.config_file().read_bytes())
    return cache_root() / "vela" / f"{key.hexdigest()}.json"


def _from_cache(path: Path | None) -> VelaResult | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        layers = [VelaLayer(**layer) for layer in data.pop("layers")]
        return VelaResult(**data, layers=layers)
    except (ValueError, TypeError, KeyError):
        return None  # a torn or older entry: compile again


def _to_cache(path: Path | None, result: VelaResult) -> None:
    if path is None:
        return
    try:
        from hwopt.io.atomic import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(asdict(result)))
    except OSError:
        pass  # an unwritable cache only costs a recompile


def _failure(stdout: str, stderr: str) -> str:
    """Vela's own last words: its error line, without the traceback."""
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def _run_subprocess(command: list[str], argv: list[str], folder: str, settings: VelaSettings,
                    name: str) -> tuple[int, str, str]:
    """Vela as a new process (an executable of the user's, or ``worker = false``)."""
    try:
        done = subprocess.run([*command, *argv], capture_output=True, text=True, timeout=settings.timeout_s,
                              cwd=folder, env={**os.environ, "PYTHONHASHSEED": "0"})
    except subprocess.TimeoutExpired:
        raise HwoptError(f"Vela did not finish compiling {name} in {settings.timeout_s:g} s "
                         "(backend_settings.timeout_s)") from None
    except OSError as exc:
        raise HwoptError(f"Vela could not be started ({command[0]}: {exc.strerror})") from None
    return done.returncode, done.stdout, done.stderr


def _run_in_worker(argv: list[str], folder: str, settings: VelaSettings, name: str) -> tuple[int, str, str]:
    """Vela's ``main`` in this thread's long-lived Vela process (``vela_worker``): no Python start-up."""
    from hwopt.backends.vela_worker import VelaWorkerError, shared_worker

    try:
        answer = shared_worker().compile(argv, folder, settings.timeout_s)
    except VelaWorkerError as exc:
        if str(exc).startswith("timeout"):
            raise HwoptError(f"Vela did not finish compiling {name} in {settings.timeout_s:g} s "
                             "(backend_settings.timeout_s)") from None
        raise HwoptError(f"Vela failed on {name} ({settings.accelerator_config}): {exc}") from None
    except OSError as exc:
        raise HwoptError(f"Vela could not be started ({sys.executable}: {exc.strerror})") from None
    return int(answer["rc"]), answer["stdout"], answer["error"]


def compile_tflite(path: str | Path, settings: VelaSettings, name: str = "model") -> VelaResult:
    """Compile one TFLite file with Vela and read its performance reports."""
    data = Path(path).read_bytes()
    command = settings.command()
    cache = _cache_file(settings, data)
    cached = _from_cache(cache)
    if cached is not None:
        cached.cached, cached.vela_s = True, 0.0
        return cached
    with tempfile.TemporaryDirectory(prefix="hwopt-vela-") as folder:
        model = Path(folder) / f"{name}.tflite"
        model.write_bytes(data)
        out = Path(folder) / "out"
        start = time.perf_counter()
        argv = [str(model), *settings.arguments(), "--output-dir", str(out)]
        if settings.worker and not settings.vela:
            rc, stdout, stderr = _run_in_worker(argv, folder, settings, Path(path).name)
        else:
            rc, stdout, stderr = _run_subprocess(command, argv, folder, settings, Path(path).name)
        seconds = time.perf_counter() - start
        summary = out / f"{name}_summary_{settings.system_config}.csv"
        if rc != 0 or not summary.is_file():
            raise HwoptError(f"Vela failed on {Path(path).name} ({settings.accelerator_config}, exit "
                             f"{rc}): {_failure(stdout, stderr)}")
        figures = parse_summary(summary, stdout)
        layers = parse_layers(out / f"{name}_per-layer.csv")
    result = VelaResult(**figures, layers=layers, vela_s=seconds)
    _to_cache(cache, result)
    return result


@dataclass
class VelaModelMeasurement:
    """A whole model compiled by Vela (``MODEL_MEASURERS["vela"]``)."""

    latency_us: float
    backend: str
    meta: dict
    kernels: list = field(default_factory=list)  # whole-model: no per-kernel pairs


def measure_model(model: str | Path | onnx.ModelProto, target: Target, samples: dict | None = None,
                  ) -> VelaModelMeasurement:
    """The whole model written as int8 TFLite and compiled by Vela for ``target``."""
    from hwopt.io.model import load_model
    from hwopt.tflite.writer import write_tflite

    settings = VelaSettings.from_target(target)
    settings.command()  # a missing Vela is said before the writing
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    with tempfile.TemporaryDirectory(prefix="hwopt-tflite-") as folder:
        start = time.perf_counter()
        written = write_tflite(proto, Path(folder) / "model.tflite", samples=samples)
        write_s = time.perf_counter() - start
        result = compile_tflite(written.path, settings)
    map_layers(result.layers, written.layers)
    meta = result.to_meta()
    meta.update(target=target.name, accelerator_config=settings.accelerator_config,
                system_config=settings.system_config, memory_mode=settings.memory_mode,
                vela_version=vela_version(), write_s=round(write_s, 3), vela_s=round(result.vela_s, 3),
                calibration=written.calibration, tflite_operators=sum(written.operators.values()),
                model=proto.graph.name if isinstance(model, onnx.ModelProto) else str(model),
                layers=[asdict(layer) for layer in result.layers])
    return VelaModelMeasurement(result.latency_us, NAME, meta)


class VelaBackend:
    """Kernels measured one by one: each kernel's own model (``kernel_models``) compiled by Vela."""

    name = NAME

    def __init__(self, target: Target, **_: Any) -> None:
        self.target = target
        self.settings = VelaSettings.from_target(target)

    def measure(self, kernels: Sequence[Kernel], progress: Progress | None = None) -> list[Measurement]:
        from hwopt.backends.kernel_models import kernel_model
        from hwopt.tflite.writer import write_tflite

        self.settings.command()
        out = []
        with tempfile.TemporaryDirectory(prefix="hwopt-vela-kernels-") as folder:
            for i, kernel in enumerate(kernels):
                if kernel.kind == "view":
                    out.append(Measurement(kernel, 0.0, 0.0, self.name, {"note": "view: metadata only, cost 0"}))
                else:
                    path = Path(folder) / f"kernel{i}.tflite"
                    write_tflite(kernel_model(kernel), path)
                    result = compile_tflite(path, self.settings, name=f"kernel{i}")
                    meta = result.to_meta()
                    meta.update(accelerator_config=self.settings.accelerator_config, vela_version=vela_version(),
                                kernel_figure=self.settings.kernel_figure)
                    latency = KERNEL_FIGURES[self.settings.kernel_figure](result)
                    out.append(Measurement(kernel, latency, result.offchip_traffic_bytes, self.name, meta))
                if progress is not None:
                    progress(i + 1, len(kernels))
        return out
