"""The ``onnxruntime`` backend: real timings of kernels and whole models on this machine.

Each kernel is built as its own tiny ONNX model (``kernel_models``) and run in
its own onnxruntime session with the target's fixed thread count. Timing
protocol (settings from the target's ``[backend_settings]``):

1. ``warmup_runs`` untimed runs (allocations, caches, lazy kernel selection);
2. timed runs in windows of ``window``; after each window, stop when at least
   ``min_repeats`` runs were taken and the median of all runs moved less than
   ``stability`` (2%) relative to the median one window earlier;
3. never more than ``max_repeats`` runs or ``max_seconds`` of timed runs (the
   measurement then records ``stable: false``).

The latency is the median (robust to the odd preempted run) of one session;
every kernel and model is timed in ``sessions`` fresh sessions and the mean of
their medians is kept: on a shared machine one session's median is stable to
~2% but sessions differ by up to ~10% among themselves. The host itself
drifts: a compute-bound conv's 10-second means moved +-4% over 150 s with
nothing else running. So ``measure`` times a batch of kernels in rounds, one
fresh session of every kernel per round: each kernel's sessions spread over
the whole batch's time and a slow spell is shared by all of them instead of
landing on the one being timed. On 20 sweep kernels measured twice, the
largest difference of raw medians went from 5.4-8.9% (kernel after kernel) to
2.4-3.4% (rounds), the median difference to 0.7-1.9%. (Normalising by a
reference conv timed beside each kernel was tried and dropped: the reference's
own sessions vary as much, so it added noise: max 7.1% / median 2.3% with it,
5.4% / 1.4% without, on the same quiet machine. Also tried and dropped: rounds of
short bursts, every session of a batch open at once and the fastest of 5 runs
kept per visit: net of the host's speed changes its own noise was lower, 2.9-3.5%
against 3.4-4.5% in the same hour, but it took 1.7x as long, and its noise grew
as 1/sqrt(rounds) when cut (20 rounds against 40), which at equal time leaves
little gain; ``bench/cpu_repeatability.py`` separates host and protocol.) With
``net_of_boundary`` (the default) the kernel's latency is net of what only an
isolated session pays: one session run's fixed cost and the NCHWc layout
conversions at its graph boundary (``ort_boundary``), timed the same way and
subtracted (never below a tenth of the raw time: a noise guard); ``meta``
keeps ``raw_us`` and ``boundary_us``. The ``clock``
setting chooses what is timed: ``wall`` (elapsed time: the truth on a quiet
machine) or ``cpu`` (the CPU time of the thread running the session: with one
intra-op thread onnxruntime computes in the calling thread, so this is the
same figure without the time other processes took the core away; on a shared
machine wall-clock medians of multi-millisecond models were inflated 50-70%
while CPU time stayed within a few percent of the quiet-machine wall time). Inputs and outputs are bound once (I/O binding) so the timed call is
the session's own work, not Python's copying. ``measure_model`` times a whole
model the same way: the ground truth the per-kernel estimates are judged by;
on a target with a blocked layout it also reads the layout conversions
onnxruntime ran inside the model from its profiler (``ort_layout``).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from hwopt.backends.base import Measurement, Progress
from hwopt.backends.kernel_models import kernel_model
from hwopt.backends.ort_boundary import boundary_model
from hwopt.errors import HwoptError
from hwopt.analysis.kernel import Kernel
from hwopt.targets import Target

NAME = "onnxruntime"
SESSION_STATISTICS = ("mean", "trimmed")
_LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
           "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
          "tensor(bool)": np.bool_}


@dataclass(frozen=True)
class TimingSettings:
    threads: int = 1
    warmup_runs: int = 5
    min_repeats: int = 10
    max_repeats: int = 300
    max_seconds: float = 2.0
    stability: float = 0.02
    window: int = 10
    graph_optimization: str = "all"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    seed: int = 0
    clock: str = "wall"  # wall | cpu (thread CPU time; one thread only)
    net_of_boundary: bool = True  # subtract the isolated session's run cost and boundary reorders
    sessions: int = 5  # fresh sessions per kernel/model, the mean of their medians is kept
    session_statistic: str = "mean"  # mean | trimmed (without the fastest and slowest session: needs >= 3)

    @classmethod
    def from_target(cls, target: Target) -> "TimingSettings":
        s = target.backend_settings
        try:
            settings = cls(
                threads=int(s.get("threads", 1)), warmup_runs=int(s.get("warmup_runs", 5)),
                min_repeats=int(s.get("min_repeats", 10)), max_repeats=int(s.get("max_repeats", 300)),
                max_seconds=float(s.get("max_seconds", 2.0)), stability=float(s.get("stability", 0.02)),
                window=int(s.get("window", 10)), graph_optimization=str(s.get("graph_optimization", "all")),
                providers=tuple(s.get("providers", ["CPUExecutionProvider"])), seed=int(s.get("seed", 0)),
                clock=str(s.get("clock", "wall")), net_of_boundary=bool(s.get("net_of_boundary", True)),
                sessions=int(s.get("sessions", 5)), session_statistic=str(s.get("session_statistic", "mean")),
            )
        except (TypeError, ValueError) as exc:
            raise HwoptError(f"{target.name}: bad [backend_settings] value ({exc})") from None
        if settings.clock not in ("wall", "cpu"):
            raise HwoptError(f"{target.name}: clock must be 'wall' or 'cpu', got {settings.clock!r}")
        if settings.clock == "cpu" and (settings.threads != 1 or _providers(settings) != ["CPUExecutionProvider"]):
            # Other threads' (or a GPU's) work is invisible to the calling thread's CPU clock.
            raise HwoptError(f"{target.name}: clock 'cpu' needs threads = 1 and the CPU provider only")
        if settings.session_statistic not in SESSION_STATISTICS:
            raise HwoptError(f"{target.name}: session_statistic must be one of {', '.join(SESSION_STATISTICS)}")
        if settings.session_statistic == "trimmed" and settings.sessions < 3:
            raise HwoptError(f"{target.name}: session_statistic 'trimmed' needs sessions >= 3")
        if settings.graph_optimization not in _LEVELS:
            raise HwoptError(f"{target.name}: graph_optimization must be one of {', '.join(_LEVELS)}")
        if min(settings.threads, settings.window, settings.min_repeats, settings.max_repeats, settings.sessions) < 1:
            raise HwoptError(f"{target.name}: threads, window, repeats and sessions must be >= 1")
        return settings


@dataclass
class Timing:
    median_us: float  # of one session; the mean of the session medians for ``time_sessions``
    repeats: int
    stable: bool
    session_medians: tuple[float, ...] = ()

    @property
    def spread(self) -> float:
        """Largest over smallest session median, minus one (0 for a single session)."""
        if len(self.session_medians) < 2:
            return 0.0
        return max(self.session_medians) / min(self.session_medians) - 1.0


@lru_cache(maxsize=1)
def machine() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return f"{platform.processor() or 'unknown cpu'} ({platform.machine()})"


def _providers(settings: TimingSettings) -> list[str]:
    """The asked-for providers that this onnxruntime has, CPU always last as the fallback."""
    available = set(ort.get_available_providers())
    chosen = [p for p in settings.providers if p in available and p != "CPUExecutionProvider"]
    return chosen + ["CPUExecutionProvider"]


def _session(model: onnx.ModelProto, settings: TimingSettings,
             optimized_path: str | None = None, profile_prefix: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if optimized_path:
        options.optimized_model_filepath = optimized_path  # the graph ORT actually runs, for ort_boundary
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _LEVELS[settings.graph_optimization]
    options.log_severity_level = 4  # failures become one line of ours
    # Threads spin-waiting between runs would steal the core from the next run on a small machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=_providers(settings))
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise HwoptError(f"onnxruntime cannot load the model: {str(exc).strip().splitlines()[0][:300]}") from None


def _random_feeds(session: ort.InferenceSession, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in value.shape]  # symbolic batch -> 1
        dtype = _NUMPY.get(value.type)
        if dtype is None:
            raise HwoptError(f"input {value.name!r} has type {value.type}, which hwopt cannot feed")
        feeds[value.name] = rng.standard_normal(shape).astype(dtype) if dtype != np.bool_ else np.ones(shape, bool)
    return feeds


def time_session(session: ort.InferenceSession, settings: TimingSettings) -> Timing:
    """Median latency of ``session`` under the stability protocol (module docstring)."""
    binding = session.io_binding()
    for name, array in _random_feeds(session, settings.seed).items():
        binding.bind_cpu_input(name, array)
    for output in session.get_outputs():
        binding.bind_output(output.name)
    run = session.run_with_iobinding
    now = time.thread_time_ns if settings.clock == "cpu" else time.perf_counter_ns
    try:
        run(binding)  # a model that loads may still fail to run (a Gather index out of range): say so
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        raise HwoptError(f"onnxruntime cannot run the model: {str(exc).strip().splitlines()[0][:300]}") from None
    for _ in range(max(settings.warmup_runs - 1, 0)):
        run(binding)
    samples: list[float] = []
    previous = None
    spent = 0.0  # timed seconds (on the chosen clock)
    deadline = time.perf_counter() + 5 * settings.max_seconds  # a hard wall-clock cap on a very busy machine
    while True:
        for _ in range(settings.window):
            start = now()
            run(binding)
            samples.append((now() - start) / 1000.0)
        spent += sum(samples[-settings.window:]) / 1e6
        median = statistics.median(samples)
        stable = previous is not None and abs(median - previous) <= settings.stability * previous
        if len(samples) >= settings.min_repeats and stable:
            return Timing(median, len(samples), True)
        if len(samples) >= settings.max_repeats or spent >= settings.max_seconds or time.perf_counter() > deadline:
            return Timing(median, len(samples), False)
        previous = median


def combine_sessions(timings: Sequence[Timing], statistic: str = "mean") -> Timing:
    """Sessions of one thing: the mean of their medians, or (``trimmed``) the mean without the fastest and
    the slowest session (``bench/cpu_repeatability.py`` compares the two)."""
    medians = tuple(t.median_us for t in timings)
    kept = sorted(medians)[1:-1] if statistic == "trimmed" and len(medians) >= 3 else medians
    return Timing(statistics.fmean(kept), sum(t.repeats for t in timings), all(t.stable for t in timings),
                  medians)


def time_sessions(make_session: Callable[[int], ort.InferenceSession], settings: TimingSettings) -> Timing:
    """``settings.sessions`` fresh sessions (``make_session(index)``) timed one after the other."""
    return combine_sessions([time_session(make_session(index), settings) for index in range(settings.sessions)],
                            settings.session_statistic)


class OrtBackend:
    """Measures kernels as real onnxruntime sessions on this machine (the Backend protocol)."""

    name = NAME

    def __init__(self, target: Target) -> None:
        self.target = target
        self.settings = TimingSettings.from_target(target)

    def meta(self, timing: Timing | None) -> dict:
        meta = {"machine": machine(), "onnxruntime": ort.__version__, "threads": self.settings.threads,
                "providers": _providers(self.settings), "target": self.target.name,
                "clock": self.settings.clock}
        if timing is None:
            meta["note"] = "view: metadata only, cost 0"
        else:
            meta.update(repeats=timing.repeats, stable=timing.stable, sessions=len(timing.session_medians),
                        session_spread=round(timing.spread, 4))
        return meta

    def _plan(self, kernel: Kernel) -> tuple[onnx.ModelProto, onnx.ModelProto | None]:
        """The kernel's model and (with ``net_of_boundary``) its boundary model."""
        model = kernel_model(kernel, self.settings.seed)
        if not self.settings.net_of_boundary:
            return model, None
        with tempfile.TemporaryDirectory(prefix="hwopt-ort-") as tmp:
            path = os.path.join(tmp, "optimized.onnx")
            _session(model, self.settings, path)  # writes the graph onnxruntime runs, which the boundary needs
            optimized = onnx.load(path)
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output}
        return model, boundary_model(optimized, shapes)

    def measure(self, kernels: Sequence[Kernel], progress: Progress | None = None) -> list[Measurement]:
        """Every kernel in ``settings.sessions`` rounds: each round times one fresh session of every kernel
        (and of its boundary model). A slow or fast spell of a shared host then spreads over the whole batch
        instead of landing on the one kernel being timed at that moment."""
        settings = self.settings
        # The boundary graph is run as written: optimizing it could cancel the reorders it times.
        plain = replace(settings, graph_optimization="disable")
        plans = {i: self._plan(k) for i, k in enumerate(kernels) if k.kind != "view"}
        runs: dict[int, list[Timing]] = {i: [] for i in plans}
        boundary_runs: dict[int, list[Timing]] = {i: [] for i in plans}
        order = list(plans)
        for round_index in range(settings.sessions):
            # Every other round backwards: each kernel's sessions then sit at the same mean time, so a
            # drift over the batch does not favour its first kernels over its last.
            for i in order if round_index % 2 == 0 else order[::-1]:
                model, boundary_proto = plans[i]
                runs[i].append(time_session(_session(model, settings), settings))
                if boundary_proto is not None:
                    boundary_runs[i].append(time_session(_session(boundary_proto, plain), plain))
            if progress is not None:
                progress(len(kernels) * (round_index + 1) // settings.sessions, len(kernels))
        out = []
        for i, kernel in enumerate(kernels):
            if i not in plans:
                out.append(Measurement(kernel, 0.0, None, self.name, self.meta(None)))
                continue
            timing = combine_sessions(runs[i], settings.session_statistic)
            meta = self.meta(timing)
            latency = timing.median_us
            if boundary_runs[i]:
                boundary = combine_sessions(boundary_runs[i], settings.session_statistic)
                latency = max(timing.median_us - boundary.median_us, 0.1 * timing.median_us)  # noise guard
                meta.update(raw_us=round(timing.median_us, 3), boundary_us=round(boundary.median_us, 3))
            out.append(Measurement(kernel, latency, None, self.name, meta))
        return out


@dataclass
class ModelLatency:
    """A whole model's measured latency on a target."""

    latency_us: float
    backend: str
    meta: dict


def measure_model(model: str | Path | onnx.ModelProto, target: Target, as_given: bool = False) -> ModelLatency:
    """The whole model timed end to end (the ground truth for this target), in its canonical form.

    Canonical, like every graph hwopt estimates and writes (the form is verified exact): a model whose
    ReLU6 is written Min/Max runs ~1.7x slower as given, because onnxruntime fuses Conv+Clip but not
    Conv+Min+Max; ``as_given`` times the file untouched.
    """
    from hwopt.canonical.canonicalize import canonicalize
    from hwopt.io.model import load_model

    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    if not as_given:
        proto, _ = canonicalize(proto, verify=False)
    backend = OrtBackend(target)
    timing = time_sessions(lambda _: _session(proto, backend.settings), backend.settings)
    meta = backend.meta(timing)
    meta["model"] = proto.graph.name if isinstance(model, onnx.ModelProto) else str(model)
    meta["form"] = "as given" if as_given else "canonical"
    if target.fusion.blocked_layout:
        meta.update(model_conversions(proto, backend.settings).to_meta())
    return ModelLatency(timing.median_us, NAME, meta)


def model_conversions(proto: onnx.ModelProto, settings: TimingSettings):
    """The layout conversions onnxruntime runs inside ``proto``, from its profiler (``ort_layout``)."""
    from hwopt.backends.ort_layout import profile_conversions

    return profile_conversions(proto, lambda m, prefix: _session(m, settings, profile_prefix=prefix),
                               lambda session: _random_feeds(session, settings.seed))
