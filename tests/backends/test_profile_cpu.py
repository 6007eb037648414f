"""The cpu (real onnxruntime) backend, the table backend, the profiling sweep and their CLI.

Real sessions, no mocks. Timing settings are cut down (a copy of the cpu
target with fewer repeats) to keep the suite fast; the protocol is the same.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from hwopt.backends import get_backend
from hwopt.backends.base import Measurement
from hwopt.backends.table_file import read_table, write_table
from hwopt.backends.kernel_models import SUPPORTED_KINDS, kernel_model
from hwopt.backends.ort_cpu import OrtBackend, measure_model
from hwopt.backends.table import TableBackend
from hwopt.errors import HwoptError
from hwopt.analysis.kernel import Kernel
from hwopt.estimator.profile import model_kernels, neighbours, profile, sweep
from hwopt.targets import load_target

REPO = Path(__file__).resolve().parents[2]
P = 8

KERNELS = [
    Kernel("conv", 16, 32, 28, 28, 28, 28, 3, 3, 1, 1, "relu6"),
    Kernel("conv", 3, 16, 32, 32, 16, 16, 3, 3, 2, 1, "hardswish"),
    Kernel("dwconv", 32, 32, 28, 28, 14, 14, 5, 5, 2, 32, "silu"),
    Kernel("gconv", 32, 32, 14, 14, 14, 14, 3, 3, 1, 4, "x*hardsigmoid"),
    Kernel("gemm", 256, 100, batch=1, op="Gemm", act="sigmoid"),
    Kernel("eltwise", 24, 24, 28, 28, 28, 28, inputs=2, op="Add", act="relu"),
    Kernel("eltwise", 24, 24, 14, 14, 14, 14, inputs=2, op="Mul"),
    Kernel("act", 24, 24, 14, 14, 14, 14, op="HardSigmoid"),
    Kernel("pool", 16, 16, 56, 56, 28, 28, 3, 3, 2, op="MaxPool"),
    Kernel("reduce", 64, 64, 7, 7, 1, 1, op="GlobalAveragePool"),
    Kernel("resize", 16, 16, 14, 14, 28, 28, op="Resize"),
    Kernel("concat", 40, 40, 14, 14, 14, 14, inputs=3, op="Concat"),
    Kernel("softmax", 91, 91, 50, 1, 50, 1, op="Softmax"),
    Kernel("norm", 120, 120, 40, 1, 40, 1, op="LayerNormalization"),
    Kernel("gemm", 15, 40, groups=8, inputs=2, batch=320, op="MatMul"),  # attention's Q @ K^T, 8 heads
    Kernel("layout", 24, 24, 19, 19, 19, 19, op="Transpose"),
]


@pytest.fixture(scope="module")
def fast_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cpu target with a cut-down timing protocol (same stability rule)."""
    text = (REPO / "estimator/cpu/target.toml").read_text()
    for old, new in (("warmup_runs = 5", "warmup_runs = 2"), ("min_repeats = 10", "min_repeats = 5"),
                     ("window = 10", "window = 5"), ("max_seconds = 2.0", "max_seconds = 0.3")):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path_factory.mktemp("target") / "cpu_fast.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def backend(fast_target: Path) -> OrtBackend:
    return OrtBackend(load_target(fast_target))


@pytest.fixture(scope="module")
def mobilenetv2():
    from examples.zoo import MODELS
    from hwopt.canonical.canonicalize import canonicalize

    return canonicalize(MODELS["mobilenetv2"](0), verify=False)[0]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwopt.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


# ---------------------------------------------------------------- the ORT backend

def test_every_supported_kind_builds_a_checked_model_and_times(backend: OrtBackend) -> None:
    assert {k.kind for k in KERNELS} == set(SUPPORTED_KINDS)
    measurements = backend.measure(KERNELS)
    for kernel, m in zip(KERNELS, measurements):
        onnx.checker.check_model(kernel_model(kernel), full_check=True)
        assert m.kernel == kernel and m.backend == "onnxruntime"
        assert m.latency_us > 0, kernel.describe()
        assert m.meta["threads"] == 1 and m.meta["repeats"] >= 5 and m.meta["onnxruntime"]
        assert m.meta["raw_us"] >= m.latency_us and m.meta["boundary_us"] > 0


def test_boundary_model_holds_exactly_the_boundary_reorders(tmp_path: Path) -> None:
    import onnxruntime as ort

    from hwopt.backends.ort_boundary import boundary_model

    model = kernel_model(KERNELS[0])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(tmp_path / "opt.onnx")
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output}
    ops = [n.op_type for n in boundary_model(optimized, shapes).graph.node]
    reorders = [n.op_type for n in optimized.graph.node if n.op_type.startswith("Reorder")]
    assert ops == reorders or (not reorders and ops == ["Neg"])


def test_kernel_models_are_seeded_and_exact_in_shape() -> None:
    kernel = KERNELS[2]
    assert kernel_model(kernel).SerializeToString() == kernel_model(kernel).SerializeToString()
    inferred = onnx.shape_inference.infer_shapes(kernel_model(kernel))
    conv_out = inferred.graph.node[0].output[0]
    value = next(v for v in inferred.graph.value_info if v.name == conv_out)
    assert [d.dim_value for d in value.type.tensor_type.shape.dim] == [1, 32, 14, 14]  # padding gives out_h x out_w


@pytest.mark.parametrize("op,expected", [("Mul", lambda x: x * 0.5), ("Add", lambda x: x + 0.5),
                                         ("Sub", lambda x: x - 0.5), ("Div", lambda x: x / 0.5)])
def test_a_standalone_op_by_a_constant_builds_and_computes_it(op: str, expected, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    kernel = Kernel("act", 3, 3, 16, 16, 16, 16, op=op)  # e.g. a Keras export's input scaling
    path = tmp_path / "act.onnx"
    onnx.save(kernel_model(kernel), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], expected(x), rtol=1e-6)


def test_view_costs_zero_and_unknown_is_an_error(backend: OrtBackend) -> None:
    view = backend.measure([Kernel("view", 10, 10, op="Reshape")])[0]
    assert view.latency_us == 0.0 and "cost 0" in view.meta["note"]
    with pytest.raises(HwoptError, match="unknown"):
        backend.measure([Kernel("unknown", 4, 4, op="NonMaxSuppression")])
    with pytest.raises(HwoptError, match="activation"):
        kernel_model(Kernel("conv", 8, 8, 4, 4, 4, 4, act="mystery"))


def test_repeated_medians_agree(backend: OrtBackend) -> None:
    # Kernels of ~100 us and more: long enough that the timer and scheduler noise stay small.
    kernels = [KERNELS[0], KERNELS[2], KERNELS[8]]
    first = [m.latency_us for m in backend.measure(kernels)]
    second = [m.latency_us for m in backend.measure(kernels)]
    for a, b in zip(first, second):
        # Loose: the suite runs on shared machines; the figure for quiet ones is in the report.
        assert abs(a - b) / min(a, b) < 1.0


def test_measure_model_times_the_whole_model(fast_target: Path, tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(kernel_model(KERNELS[0]), path)
    result = measure_model(path, load_target(fast_target))
    assert result.latency_us > 0 and result.backend == "onnxruntime" and result.meta["model"] == str(path)


# ---------------------------------------------------------------- the sweep

def test_sweep_is_deterministic_and_covers_the_space(mobilenetv2) -> None:
    kernels = sweep(P, [mobilenetv2], examples=False, seed=0)
    assert kernels == sweep(P, [mobilenetv2], examples=False, seed=0)
    assert kernels != sweep(P, [mobilenetv2], examples=False, seed=1)
    assert len(set(kernels)) == len(kernels)
    convs = [k for k in kernels if k.kind in ("conv", "dwconv")]
    assert any(k.cout % P == 0 for k in convs) and any(k.cout % P for k in convs)
    assert any(k.cout % P == 1 or k.cout % P == P - 1 for k in convs)  # P*k +- 1
    assert {1, 3, 5, 7} <= {k.kernel for k in convs}
    assert {1, 2} <= {k.stride for k in convs}
    assert {7, 224} <= {k.h for k in kernels}
    _, fused, dense = model_kernels(mobilenetv2)
    assert len(fused) == 16 and len(dense) == 17  # every IBN block with an expand conv; every depthwise conv
    assert fused[0] == Kernel("conv", 16, 96, 112, 112, 56, 56, 3, 3, 2, 1, "relu6")
    assert set(fused) <= set(kernels) and set(dense) <= set(kernels)
    capped = sweep(P, [mobilenetv2], examples=False, seed=0, count=12)
    assert capped == kernels[:12]
    assert {"conv", "dwconv"} <= {k.kind for k in capped} and set(fused) & set(capped) and set(dense) & set(capped)


def test_sweep_adds_standalone_elementwise_ops_without_changing_the_other_draws(mobilenetv2) -> None:
    from hwopt.estimator.profile import STANDALONE_OPS

    kernels = sweep(P, [mobilenetv2], examples=False, seed=0)
    acts = [k for k in kernels if k.kind == "act"]
    # Every op on the network input as given and as an NHWC export reads it (224 "channels" of 224x3).
    for shape in ((3, 224, 224), (224, 224, 3)):
        assert {k.op for k in acts if (k.cin, k.h, k.w) == shape} == set(STANDALONE_OPS)
    convs = {(k.cout, k.out_h, k.out_w) for k in kernels if k.kind in ("conv", "dwconv")}
    assert {(k.cin, k.h, k.w) for k in acts} - {(3, 224, 224), (224, 224, 3)} <= convs
    for k in acts:
        onnx.checker.check_model(kernel_model(k), full_check=True)
    # The group draws from its own generator: the other kernels are those of a sweep without it.
    from hwopt.estimator import profile as profile_module

    original = profile_module.standalone_activations
    try:
        profile_module.standalone_activations = lambda seeds, sources, rng: ([], {})
        without = sweep(P, [mobilenetv2], examples=False, seed=0)
    finally:
        profile_module.standalone_activations = original
    assert [k for k in kernels if k.kind != "act"] == without


@pytest.mark.slow  # a kernel sweep through the CLI (10 s of CPU)
def test_profile_cli_kind_filters_the_sweep(fast_target: Path, tmp_path: Path) -> None:
    from examples.build import build_example

    model = build_example("mobilenetv2", tmp_path)
    out = tmp_path / "acts.csv"
    done = _cli("profile", "--target", str(fast_target), "--no-examples", "--from", str(model), "--kind", "act",
                "--count", "2", "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert [m.kernel.kind for m in read_table(out)] == ["act", "act"]
    bad = _cli("profile", "--target", str(fast_target), "--kind", "acts", "-o", str(out))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--kind 'acts'" in bad.stderr


def test_neighbours_propose_nearby_unmeasured_kernels() -> None:
    worst = [KERNELS[0], KERNELS[2]]
    measured = [Kernel("conv", 16, 40, 28, 28, 28, 28, 3, 3, 1, 1, "relu6")]
    found = neighbours(worst, P, per_kernel=4, exclude=measured)
    assert found == neighbours(worst, P, per_kernel=4, exclude=measured)
    assert len(found) == 8 and len(set(found)) == 8 and not set(found) & set(worst)
    assert measured[0] not in found
    assert Kernel("conv", 16, 33, 28, 28, 28, 28, 3, 3, 1, 1, "relu6") in found  # off the P grid
    assert all(k.groups == k.cin for k in found if k.kind == "dwconv")


def test_profile_resumes_without_duplicates(backend: OrtBackend, tmp_path: Path) -> None:
    kernels = KERNELS[5:11]
    out = tmp_path / "table.csv.gz"
    first = profile(kernels[:2], backend, out)  # an "interrupted" sweep: only a prefix got measured
    assert (first.measured, first.total) == (2, 2)
    calls = []
    second = profile(kernels, backend, out, progress=lambda label, done, total: calls.append((done, total)))
    assert (second.measured, second.skipped, second.total) == (4, 2, 6)
    assert calls[-1] == (4, 4)
    rows = read_table(out)
    assert sorted(map(repr, (m.kernel for m in rows))) == sorted(map(repr, kernels))
    assert profile(kernels, backend, out).measured == 0
    refused = profile(kernels + [Kernel("act", 8, 8, 4, 4, 4, 4, op="BatchNormalization")], backend, out)
    assert refused.measured == 0 and len(refused.failed) == 1 and "BatchNormalization" in refused.failed[0][1]
    assert len(read_table(out)) == len(kernels)
    # A refused kernel in the same batch as new ones: the others are still measured.
    mixed = profile(kernels + [Kernel("act", 8, 8, 4, 4, 4, 4, op="BatchNormalization"), KERNELS[0]], backend, out)
    assert mixed.measured == 1 and len(mixed.failed) == 1 and len(read_table(out)) == len(kernels) + 1


# ---------------------------------------------------------------- the table backend and the CLI

def test_table_import_round_trip(tmp_path: Path) -> None:
    rows = [Measurement(k, 10.0 + i, None, "my-npu", {"sdk": "2.1"}) for i, k in enumerate(KERNELS)]
    rows.append(Measurement(KERNELS[0], 30.0, None, "my-npu", {}))  # a repeat: merged by median (10 and 30)
    source, out = tmp_path / "mine.csv", tmp_path / "imported.csv.gz"
    write_table(source, rows)
    done = _cli("profile", "--target", "cpu", "--backend", "table", str(source), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert f"imported {len(KERNELS)} kernel measurements" in done.stdout
    table = TableBackend(path=out)
    answered = table.measure(KERNELS + [Kernel("view", 3, 3, op="Flatten")])
    assert answered[0].latency_us == 20.0 and answered[0].meta["merged_rows"] == 2
    assert [m.latency_us for m in answered[1:-1]] == [11.0 + i for i in range(len(KERNELS) - 1)]
    assert answered[-1].latency_us == 0.0
    with pytest.raises(HwoptError, match="not in the table"):
        table.measure([Kernel("conv", 1, 1)])


@pytest.mark.parametrize("edit, message", [
    (lambda row: row.replace(",10.0,", ",-5.0,"), "latency_us must be"),
    (lambda row: row.replace("conv,16,32", "conv,16,x"), "bad row"),
    (lambda row: row.replace("conv,16,32", "warp,16,32"), "kind 'warp'"),
])
def test_bad_table_is_one_line_and_exit_2(tmp_path: Path, edit, message: str) -> None:
    source = tmp_path / "bad.csv"
    write_table(source, [Measurement(k, 10.0, None, "x", {}) for k in KERNELS[:3]])
    lines = source.read_text().splitlines()
    lines[1] = edit(lines[1])
    source.write_text("\n".join(lines) + "\n")
    done = _cli("profile", "--backend", "table", str(source), "-o", str(tmp_path / "out.csv"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and f"{source}:2:" in done.stderr and message in done.stderr
    assert not (tmp_path / "out.csv").exists()


def test_targets_lists_cpu() -> None:
    done = _cli("targets")
    assert done.returncode == 0
    row = next(line for line in done.stdout.splitlines() if " cpu " in line)
    assert "8" in row and "fp32" in row and "onnxruntime" in row


def test_measure_prints_a_latency(fast_target: Path, tmp_path: Path) -> None:
    path = tmp_path / "small.onnx"
    onnx.save(kernel_model(KERNELS[2]), path)
    done = _cli("measure", str(path), "--target", str(fast_target))
    assert done.returncode == 0, done.stderr
    assert " ms " in done.stdout and "on cpu" in done.stdout
    bad = _cli("measure", str(tmp_path / "missing.onnx"), "--target", "cpu")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_backend_registry_dispatches_by_target(fast_target: Path, tmp_path: Path) -> None:
    assert isinstance(get_backend(load_target(fast_target)), OrtBackend)
    two_threads = tmp_path / "two.toml"
    two_threads.write_text(fast_target.read_text().replace("threads = 1", "threads = 2"))
    with pytest.raises(HwoptError, match="clock 'cpu' needs threads = 1"):
        get_backend(load_target(two_threads))


@pytest.mark.slow  # a kernel sweep, killed and resumed (8 s of CPU)
def test_profile_cli_sweeps_and_resumes(fast_target: Path, tmp_path: Path) -> None:
    from examples.build import build_example

    model = build_example("mobilenetv3_small", tmp_path)
    out = tmp_path / "sweep.csv.gz"
    args = ("profile", "--target", str(fast_target), "--no-examples", "--from", str(model), "--count", "3",
            "-o", str(out), "-q")
    assert _cli(*args).returncode == 0
    assert len(read_table(out)) == 3
    again = _cli(*args[:-1])
    assert again.returncode == 0 and "0 kernels measured, 3 already in the table" in again.stdout
    assert _cli("profile", "--no-examples", "-o", str(out)).returncode == 2  # nothing to sample from


def test_sessions_combine_by_mean_or_trimmed_mean(fast_target: Path, tmp_path: Path) -> None:
    from hwopt.backends.ort_cpu import Timing, TimingSettings, combine_sessions

    sessions = [Timing(m, 10, True) for m in (100.0, 101.0, 99.0, 140.0, 60.0)]
    assert combine_sessions(sessions).median_us == pytest.approx(100.0)
    assert combine_sessions(sessions, "trimmed").median_us == pytest.approx(100.0)  # 60 and 140 dropped
    skewed = [Timing(m, 10, True) for m in (100.0, 101.0, 99.0, 180.0, 98.0)]
    assert combine_sessions(skewed).median_us == pytest.approx(115.6)
    assert combine_sessions(skewed, "trimmed").median_us == pytest.approx(100.0)
    text = fast_target.read_text()
    for setting, message in (('session_statistic = "median"', "must be one of"),
                             ('session_statistic = "trimmed"\nsessions = 2', "needs sessions >= 3")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text.replace('session_statistic = "mean"', setting).replace("sessions = 5", "")
                       if "sessions = 2" in setting else text.replace('session_statistic = "mean"', setting))
        with pytest.raises(HwoptError, match=message):
            TimingSettings.from_target(load_target(bad))
