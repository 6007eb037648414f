"""The estimator: training, persistence, the batch API, memory, fallback and the CLI (real XGBoost, real tables)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hwopt.backends.table_file import read_table, write_table
from hwopt.cli import app
from hwopt.errors import HwoptError
from hwopt.estimator import load_estimator
from hwopt.estimator.estimator import Estimator
from hwopt.estimator.features import features
from hwopt.estimator.memory import peak_activation_bytes
from hwopt.estimator.regressor import KernelRegressor
from hwopt.estimator.train import train_estimator
from hwopt.analysis.kernels import schedule
from hwopt.analysis.kernel import Kernel
from hwopt.targets import estimator_root, load_target

CPU_TABLE = estimator_root() / "cpu" / "measurements.csv.gz"
SMALL_GRID = {"max_depth": (3,), "learning_rate": (0.2,), "n_estimators": (40,), "min_child_weight": (1,)}
runner = CliRunner()


@pytest.fixture(scope="module")
def small_table(tmp_path_factory) -> Path:
    """Every 8th row of the shipped cpu table (real measurements): about 190 kernels."""
    rows = read_table(CPU_TABLE)[::8]
    path = tmp_path_factory.mktemp("table") / "small.csv.gz"
    write_table(path, rows)
    return path


@pytest.fixture(scope="module")
def cpu() -> Estimator:
    return load_estimator("cpu")


def test_trained_model_round_trips_through_xgboost_json(small_table: Path, tmp_path: Path) -> None:
    target = load_target("cpu")
    card = train_estimator(read_table(small_table), target, tmp_path, source=str(small_table), grid=SMALL_GRID)
    assert card["training"]["rows"] > 100
    models = sorted(p.name for p in tmp_path.glob("latency.*.json"))
    assert models and all(json.loads((tmp_path / m).read_text()).get("learner") for m in models)  # XGBoost JSON
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pickle"))
    kernels = [m.kernel for m in read_table(CPU_TABLE)[1::50]]
    assert np.array_equal(load_estimator(target, tmp_path).predict(kernels),
                          load_estimator(target, tmp_path).predict(kernels))
    # identical to the in-memory model that was saved
    regressor = KernelRegressor.fit(*_xy(small_table, target), grid=SMALL_GRID)
    regressor.save(tmp_path / "again", "latency")
    again = KernelRegressor.load(tmp_path / "again", "latency")
    known = [k for k in kernels if k.kind in regressor.kinds]
    xk = features(known, target.parallelism, target.dtype_bytes)
    kinds = [k.kind for k in known]
    assert np.allclose(regressor.predict(xk, kinds), again.predict(xk, kinds), rtol=1e-6)


def _xy(table: Path, target):
    rows = [m for m in read_table(table) if m.kernel.kind in ("conv", "dwconv")]  # two groups: quick
    kernels = [m.kernel for m in rows]
    return (features(kernels, target.parallelism, target.dtype_bytes), [k.kind for k in kernels],
            np.array([m.latency_us for m in rows]))


def test_conv_predictions_positive_and_grow_with_macs(cpu: Estimator) -> None:
    base = Kernel("conv", 64, 64, 56, 56, 56, 56, 3, 3, 1, 1, "relu")
    kernels = [replace(base, cin=c, cout=c) for c in (16, 32, 64, 128, 256)]
    kernels += [replace(base, h=s, w=s, out_h=s, out_w=s) for s in (14, 28, 56, 112)]
    latency = cpu.predict(kernels)
    assert np.all(latency > 0)
    channels, sizes = latency[:5], latency[5:]
    assert np.all(np.diff(channels) > 0) and np.all(np.diff(sizes) > 0)  # 4x MACs per step: clearly slower
    assert cpu.predict(kernels[:1])[0] == latency[0]  # cached, same value


def test_unknown_kind_raises_and_fallback_is_flagged(cpu: Estimator) -> None:
    odd = Kernel("unknown", 32, 32, 14, 14, 14, 14, op="NonMaxSuppression")
    with pytest.raises(HwoptError, match="NonMaxSuppression"):
        cpu.predict([odd])
    allowed = load_estimator("cpu", allow_fallback=True)
    value = allowed.predict([odd])[0]
    assert value > 0  # never zero
    sched = schedule(_model_with_unknown())
    result = allowed.estimate(sched)
    assert len(result.fallbacks) == 1 and "LRN" in result.fallbacks[0]
    assert [k.fallback for k in result.per_kernel] == [False, True] and result.per_kernel[1].latency_us > 0
    with pytest.raises(HwoptError):
        cpu.estimate(sched)


def _model_with_unknown():
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8, 3, 3], np.ones(8 * 8 * 9, dtype=np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("LRN", ["c"], ["y"], size=3, name="lrn")]
    graph = helper.make_graph(nodes, "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("target", ["cpu", "npu32"])
def test_a_keras_style_input_scaling_is_scored_by_the_shipped_estimators(target: str, tmp_path: Path) -> None:
    """x * (1/127.5) - 1 on the network input, as Keras exports write it, before the first conv."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 112, 112])
    inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 127.5]),
             helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
             helper.make_tensor("w", TensorProto.FLOAT, [32, 3, 3, 3],
                                np.random.default_rng(0).standard_normal(864).astype(np.float32))]
    nodes = [helper.make_node("Mul", ["x", "scale"], ["scaled"], name="rescale"),
             helper.make_node("Sub", ["scaled", "one"], ["centred"], name="offset"),
             helper.make_node("Conv", ["centred", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv")]
    path = tmp_path / "keras_like.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                                opset_imports=[helper.make_opsetid("", 13)]), path)
    estimator = load_estimator(target)
    result = estimator.estimate(path)
    kinds = [(k.kind, k.description.split(" ")[0]) for k in result.per_kernel]
    assert kinds[:2] == [("act", "act(Mul)"), ("act", "act(Sub)")]
    assert not result.fallbacks and all(k.latency_us > 0 for k in result.per_kernel)
    # Elementwise on 150k values costs less than the conv that reads them.
    assert max(k.latency_us for k in result.per_kernel[:2]) < result.per_kernel[2].latency_us


def test_model_estimate_is_the_sum_of_its_kernels(cpu: Estimator, example_path) -> None:
    sched = cpu.schedule_of(example_path("mobilenetv2"))
    result = cpu.estimate(sched)
    kernels = [sk.kernel for sk in sched.kernels]
    assert result.latency_us == pytest.approx(float(cpu.predict(kernels).sum()), rel=1e-12)
    assert result.latency_us == pytest.approx(sum(k.latency_us for k in result.per_kernel), rel=1e-12)
    assert all(k.latency_us == 0 for k in result.per_kernel if k.free)
    assert result.param_bytes > 0 and result.peak_activation_bytes > 0 and result.dram_bytes is None
    # timing of predict + sum on a cold cache (the CLI reports it; not asserted tightly on a shared machine)
    cold = load_estimator("cpu")
    start = time.perf_counter()
    cold.estimate(sched)
    elapsed = time.perf_counter() - start
    print(f"estimate of {len(kernels)} kernels: {elapsed * 1000:.1f} ms")
    assert elapsed < 2.0


def test_peak_memory_with_padding_at_least_without(example_path, cpu: Estimator) -> None:
    sched = cpu.schedule_of(example_path("mobilenetv3_small"))
    for dtype_bytes in (1, 4):
        assert peak_activation_bytes(sched, 32, dtype_bytes) >= peak_activation_bytes(sched, 1, dtype_bytes)
    assert peak_activation_bytes(sched, 1, 1) * 4 == pytest.approx(peak_activation_bytes(sched, 1, 4), rel=0.01)


def test_estimate_cli_prints_totals_and_json(example_path) -> None:
    model = str(example_path("resnet18"))
    plain = runner.invoke(app, ["estimate", model, "--target", "cpu"], terminal_width=200)
    assert plain.exit_code == 0, plain.output
    assert "latency:" in plain.output and "peak activations" in plain.output
    as_json = runner.invoke(app, ["estimate", model, "--target", "cpu", "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["latency_us"] > 0 and len(data["kernels"]) > 10
    print(f"hwopt estimate resnet18 (predict + sum after loading): {data['estimate_ms']:.1f} ms")


def test_train_cli_on_a_tiny_table(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.csv"
    write_table(tiny, read_table(CPU_TABLE)[:30])
    out = tmp_path / "mydevice"
    result = runner.invoke(app, ["train", str(tiny), "-o", str(out), "--target", "cpu"])
    assert result.exit_code == 0, result.output
    assert (out / "estimator.json").exists() and (out / "CARD.md").exists()
    estimator = load_estimator("cpu", out)
    assert np.all(estimator.predict([m.kernel for m in read_table(tiny)]) > 0)
    bad = runner.invoke(app, ["train", str(tmp_path / "missing.csv"), "-o", str(out)])
    assert bad.exit_code == 2 and "no such measurements table" in bad.output


def test_npu32_estimator_has_the_off_chip_traffic_head(example_path) -> None:
    npu = load_estimator("npu32")
    result = npu.estimate(npu.schedule_of(example_path("mobilenetv3_small")))
    assert result.dram_bytes is not None and result.dram_bytes > 0
    assert result.dram_bytes == pytest.approx(sum(k.dram_bytes for k in result.per_kernel), rel=1e-9)
    assert result.latency_us > 0 and not result.fallbacks
    # int8, padded to 32: the target's layout, not the fp32 file's
    assert result.peak_activation_bytes >= peak_activation_bytes(npu.schedule_of(example_path("mobilenetv3_small")),
                                                                 1, 1)


def test_in_model_term_recovers_a_known_overhead() -> None:
    from hwopt.estimator.in_model import fit_in_model_term

    sums = np.array([1000.0, 5000.0, 12000.0, 3000.0, 800.0])
    counts = np.array([40, 60, 150, 30, 90])
    term = fit_in_model_term(sums, counts, 1.12 * sums + 2.5 * counts, per_kernel=True)
    assert term.scale == pytest.approx(1.12, rel=1e-9) and term.per_kernel_us == pytest.approx(2.5, rel=1e-9)
    assert term.median_abs_error_pct == pytest.approx(0.0, abs=1e-9)
    # by default the scale alone (a per-kernel cost is not identifiable across few families)
    default = fit_in_model_term(sums, counts, 1.12 * sums + 2.5 * counts)
    assert default.per_kernel_us == 0.0 and default.scale > 1.12
    # a negative per-kernel cost is not physical: the fit falls back to the scale alone
    shrink = fit_in_model_term(sums, counts, 1.2 * sums - 1.0 * counts, per_kernel=True)
    assert shrink.per_kernel_us == 0.0 and 1.0 < shrink.scale < 1.2
    with pytest.raises(HwoptError, match="at least"):
        fit_in_model_term(sums[:2], counts[:2], sums[:2])


@pytest.mark.slow  # times models end to end and trains (13 s of CPU)
def test_train_with_end_to_end_models_learns_the_in_model_term(tmp_path: Path, example_path) -> None:
    """Whole models timed end to end with onnxruntime (hwopt measure) teach the estimator the in-model term."""
    tiny = tmp_path / "tiny.csv.gz"
    write_table(tiny, read_table(CPU_TABLE)[::6])
    rows = ["model,latency_us,reorders,reorder_bytes,reorder_us,reorder_nodes"]
    for name in ("mobilenetv3_small", "mobilenetv2", "efficientnet_lite0"):
        measured = runner.invoke(app, ["measure", str(example_path(name)), "--target", "cpu", "--json"])
        assert measured.exit_code == 0, measured.output
        data = json.loads(measured.output)
        meta = data["meta"]
        assert meta["form"] == "canonical" and meta["sessions"] >= 1
        assert meta["reorders"] >= 1 and meta["reorder_us"] > 0  # measured inside the model (profiler)
        nodes = [item.split(":") for item in meta["reorder_nodes"].split(";")]  # each conversion: bytes:us
        assert len(nodes) == meta["reorders"] and sum(int(b) for b, _ in nodes) == meta["reorder_bytes"]
        rows.append(f"{example_path(name)},{data['latency_us']},{meta['reorders']},{meta['reorder_bytes']},"
                    f"{meta['reorder_us']},{meta['reorder_nodes']}")
    (tmp_path / "e2e.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "est"
    result = runner.invoke(app, ["train", str(tiny), "-o", str(out), "--target", "cpu",
                                 "--end-to-end", str(tmp_path / "e2e.csv")])
    assert result.exit_code == 0, result.output
    assert "in-model term from 3 models" in result.output
    estimator = load_estimator("cpu", out, allow_fallback=True)  # a sixth of the table lacks some kinds
    term = estimator.in_model
    assert term is not None and term.scale > 0 and term.per_kernel_us >= 0
    # The conversion costs come from the profiled conversion times: positive, and near what they measured.
    assert term.reorder_us >= 0 and term.reorder_ns_per_byte >= 0 and term.reorder_us + term.reorder_ns_per_byte > 0
    sched = estimator.schedule_of(example_path("mobilenetv3_small"))
    kernels = [sk.kernel for sk in sched.kernels]
    isolated = estimator.predict(kernels, isolated=True)
    paid = sum(1 for k in kernels if k.kind not in estimator.free_kinds)
    conversions = sum(term.conversion_us(k) for k in kernels)
    assert conversions > 0
    estimate = estimator.estimate(sched)
    assert estimate.latency_us == pytest.approx(
        term.scale * isolated.sum() + term.per_kernel_us * paid + conversions, rel=1e-9)
    assert estimate.in_model_us == pytest.approx(estimate.latency_us - isolated.sum(), rel=1e-9)
    card = json.loads((out / "card.json").read_text())
    assert len(card["in_model"]["fitted_on"]) == 3
    bad = tmp_path / "bad.csv"
    bad.write_text("model,seconds\nx.onnx,1\n")
    refused = runner.invoke(app, ["train", str(tiny), "-o", str(out), "--end-to-end", str(bad)])
    assert refused.exit_code == 2 and "needs the columns model, latency_us" in refused.output


def test_a_kind_with_few_rows_gets_its_own_group_that_scales_with_the_prior() -> None:
    """Concat/resize on Ethos-U have a few dozen in-context rows: each such kind gets a group of its own (the
    prior scaled by its median factor plus shallow trees), so one merged-away kernel at the floor does not drag
    the kind down and a map 16x larger than any row is priced about 16x, not clamped or pooled with other kinds."""
    from hwopt.estimator.regressor import SHARED, SMALL_ROWS

    rng = np.random.default_rng(0)
    convs = [Kernel("conv", c, c, s, s, s, s, 3) for c in (8, 16, 32, 64) for s in (8, 16, 32, 64)] * 3
    resizes = [Kernel("resize", c, c, s, s, 2 * s, 2 * s, op="Resize") for c in (8, 16, 24, 32) for s in (4, 8, 12, 16)]
    pools = [Kernel("pool", c, c, s, s, s // 2, s // 2, 2, 2, 2, op="MaxPool") for c in (8, 16) for s in (8, 16, 32)]
    kernels = convs + resizes + pools
    assert len(resizes) >= SMALL_ROWS > len(pools)
    ns_per_element = {"conv": 2.0, "resize": 0.5, "pool": 40.0}
    y = np.array([k.out_elements * ns_per_element[k.kind] * 1e-3 * rng.uniform(0.95, 1.05) for k in kernels])
    y[len(convs)] = 1e-3  # one resize Vela merged away: the floor row
    x = features(kernels, 8, 1)
    regressor = KernelRegressor.fit(x, [k.kind for k in kernels], y, grid=SMALL_GRID)
    assert regressor.group_of("resize") == "resize" and regressor.group_of("pool") == SHARED
    large = Kernel("resize", 32, 32, 64, 64, 128, 128, op="Resize")  # 16x the largest resize row
    predicted = float(regressor.predict(features([large], 8, 1), ["resize"])[0])
    expected = large.out_elements * ns_per_element["resize"] * 1e-3
    assert 0.5 * expected <= predicted <= 2.0 * expected, (predicted, expected)
