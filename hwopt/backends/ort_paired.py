"""A paired, interleaved A/B timing of two models: the measured change of one decision, with its uncertainty.

Two models timed one after the other (``hwopt measure`` on each) see different
spells of a shared host: on this 2-core machine a back-to-back A/B of one
~1% decision measured +1.6% and then -4.4%, so the end-to-end protocol could
not tell the sign of most single-site rewrites. Here both models are timed in
the same process, interleaved:

- ``rounds`` rounds; each opens a fresh session of A and of B (sessions differ
  among themselves by a few percent: fresh ones per round put that spread into
  the interval instead of into the estimate), warms both, then alternates
  single runs A, B, A, B ... (``runs`` of each; every other round B first), so
  each pair of runs is adjacent in time and a slow spell lands on both;
- a round's ratio is median(B runs) / median(A runs); the change is the median
  of the rounds' ratios, and its 95% interval a percentile bootstrap of that
  median over rounds (seeded).

The clock is the target's (one thread, the session thread's CPU time by
default). A decision whose interval contains 1 (no change) is *unresolved by
measurement*: callers report it separately, never as a right or wrong sign.
An A/A run (the same model on both sides) checks the protocol: its interval
must contain 1 and be narrow (``bench/decision_accuracy.py --aa``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import onnx

from hwopt.backends.ort_cpu import TimingSettings, _random_feeds, _session
from hwopt.errors import HwoptError

ROUNDS = 12
RUNS = 8
BOOTSTRAP = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class PairedChange:
    ratio: float  # B / A: the median over rounds of the per-round ratio of medians
    low: float  # LEVEL bootstrap interval of that median
    high: float
    base_us: float  # A's latency: the median over rounds of its per-round medians
    rounds: int
    runs: int

    @property
    def change_us(self) -> float:
        return (self.ratio - 1.0) * self.base_us

    @property
    def resolved(self) -> bool:
        """The interval excludes 'no change': the measurement tells the sign."""
        return self.low > 1.0 or self.high < 1.0

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "low": self.low, "high": self.high, "base_us": self.base_us,
                "rounds": self.rounds, "runs": self.runs}

    @classmethod
    def from_dict(cls, data: dict) -> "PairedChange":
        return cls(float(data["ratio"]), float(data["low"]), float(data["high"]), float(data["base_us"]),
                   int(data["rounds"]), int(data["runs"]))


def _bound(session, settings: TimingSettings):
    binding = session.io_binding()
    for name, array in _random_feeds(session, settings.seed).items():
        binding.bind_cpu_input(name, array)
    for output in session.get_outputs():
        binding.bind_output(output.name)
    try:
        session.run_with_iobinding(binding)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        raise HwoptError(f"onnxruntime cannot run the model: {str(exc).strip().splitlines()[0][:300]}") from None
    return lambda: session.run_with_iobinding(binding)


def median_interval(ratios: np.ndarray, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``ratios`` (in log space)."""
    logs = np.log(np.asarray(ratios, dtype=float))
    rng = np.random.default_rng(seed)
    medians = np.median(logs[rng.integers(0, len(logs), size=(BOOTSTRAP, len(logs)))], axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(np.exp(low)), float(np.exp(high))


def paired_change(a: onnx.ModelProto, b: onnx.ModelProto, settings: TimingSettings, rounds: int = ROUNDS,
                  runs: int = RUNS) -> PairedChange:
    """B's latency relative to A's, timed interleaved (module docstring)."""
    if rounds < 2 or runs < 1:
        raise HwoptError("a paired timing needs at least 2 rounds and 1 run per model")
    now = time.thread_time_ns if settings.clock == "cpu" else time.perf_counter_ns
    ratios, bases = [], []
    for r in range(rounds):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        run_first, run_second = (_bound(_session(m, settings), settings) for m in (first, second))
        for _ in range(max(settings.warmup_runs - 1, 0)):
            run_first()
            run_second()
        t_first, t_second = [], []
        for _ in range(runs):
            start = now()
            run_first()
            t_first.append(now() - start)
            start = now()
            run_second()
            t_second.append(now() - start)
        m_first, m_second = statistics.median(t_first) / 1e3, statistics.median(t_second) / 1e3
        m_a, m_b = (m_first, m_second) if r % 2 == 0 else (m_second, m_first)
        ratios.append(m_b / m_a)
        bases.append(m_a)
    low, high = median_interval(np.array(ratios))
    return PairedChange(float(np.exp(np.median(np.log(ratios)))), low, high, float(statistics.median(bases)),
                        rounds, runs)
