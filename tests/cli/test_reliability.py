"""A hostile user's inputs: non-finite numbers, clobbered inputs and outputs, bad files and parameters.

Each refusal is one line on stderr and exit 2, before any long work; no input file is ever written;
no written model holds a non-finite number. The CLI runs in-process (typer's runner) on a tiny model
except where the terminal itself is checked (onnxruntime's own log lines).
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from hwopt.cli import app
from hwopt.errors import HwoptError
from tests.tinymodel import tiny_model, write_tiny

ROOT = Path(__file__).resolve().parents[2]
EXACT_RULES = "[search.dw-to-dense]\nsites = [\"dw*\"]\n"


def cli(*args: str | Path):
    """(exit code, stdout, stderr) of the hwopt command line run in-process; never a traceback."""
    os.environ.pop("HWOPT_DEBUG", None)
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def refused(args, message: str) -> str:
    code, out, err = cli(*args)
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.startswith("hwopt: error: ")]
    assert len(lines) == 1 and message in lines[0], err
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return write_tiny(tmp_path / "tiny.onnx")


@pytest.fixture()
def exact_rules(tmp_path: Path) -> Path:
    path = tmp_path / "exact.toml"
    path.write_text(EXACT_RULES)
    return path


def samples(count: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 8, 8, 8)).astype(np.float32)


def all_finite(path: Path) -> bool:
    model = onnx.load(path)
    return all(np.isfinite(numpy_helper.to_array(t)).all() for t in model.graph.initializer
               if t.data_type in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16))


# -- non-finite numbers -------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_calibration_with_non_finite_values_is_refused(tmp_path: Path, tiny: Path, bad: float) -> None:
    data = samples()
    data[3, 0, 0, 0] = bad
    data[9, 1, 2, 3] = bad
    np.savez(tmp_path / "calib.npz", x=data)
    out = tmp_path / "out.onnx"
    line = refused(["apply", tiny, "-o", out, "--rule", "fuse-ibn:init=linear", "--calibration",
                    tmp_path / "calib.npz"], "2 of 16 samples")
    assert "NaN" in line or "Inf" in line
    assert not out.exists()


def test_calibration_values_that_overflow_the_model_dtype_are_refused(tmp_path: Path, tiny: Path) -> None:
    data = samples().astype(np.float64)
    data[0, 0, 0, 0] = 1e300  # finite as float64, inf as the model's float32
    np.savez(tmp_path / "calib.npz", x=data)
    refused(["apply", tiny, "-o", tmp_path / "o.onnx", "--rule", "dw-to-dense", "--calibration",
             tmp_path / "calib.npz"], "1 of 16 samples")


@pytest.mark.parametrize("rule, message", [
    ("depth-multiplier:ridge=nan", "ridge must be a finite number"),
    ("depth-multiplier:ridge=inf", "ridge must be a finite number"),
    ("align-channels:mode=trim,ridge=-inf", "ridge must be a finite number"),
    ("depth-multiplier:ratio=nan", "ratio must be a finite number"),
    ("fuse-ibn:ridge=1e400", "ridge must be a finite number"),
    ("align-channels:p=100000000", "p must be <= 1024"),
    ("depth-multiplier:ridge=1e300", "ridge must be <="),
])
def test_non_finite_or_huge_rule_parameters_are_refused(tmp_path: Path, tiny: Path, rule: str, message: str) -> None:
    refused(["apply", tiny, "-o", tmp_path / "o.onnx", "--rule", rule], message)
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("entry, message", [
    ('name = "depth-multiplier"\nridge = nan', "rule[0].ridge = nan: every number in a rule file must be finite"),
    ('name = "depth-multiplier"\nratio = -inf', "rule[0].ratio = -inf: every number"),
    ('name = "align-channels"\np = true', "p must be int, got True"),
    ('name = "depth-multiplier"\nratio = true', "ratio must be float, got True"),
])
def test_rule_file_parameters_are_validated(tmp_path: Path, tiny: Path, entry: str, message: str) -> None:
    rules = tmp_path / "r.toml"
    rules.write_text(f"[[rule]]\n{entry}\n")
    refused(["apply", tiny, "-o", tmp_path / "o.onnx", "--rules", rules], message)


@pytest.mark.parametrize("search, message", [
    ("[search]\np = true\n[search.dw-to-dense]\n", "p must be a positive integer"),
    ("[search]\np = 100000\n[search.dw-to-dense]\n", "p must be a positive integer up to 1024"),
    ("[search.depth-multiplier]\nratios = [0.5, inf]\n", "search.depth-multiplier.ratios[1] = inf: every number"),
    ("[search.depth-multiplier]\nrange = [0.5, nan]\n", "search.depth-multiplier.range[1] = nan: every number"),
    ("[search.depth-multiplier]\nratios = [0.5, 9.0]\n", "ratios must be a non-empty list of finite"),
    ("[search.depth-multiplier]\nratios = [true]\n", "ratios must be a non-empty list of finite"),
])
def test_search_tables_are_validated(tmp_path: Path, tiny: Path, search: str, message: str) -> None:
    rules = tmp_path / "s.toml"
    rules.write_text(search)
    refused(["optimize", tiny, "-t", "cpu", "-o", tmp_path / "o.onnx", "--rules", rules], message)


def test_every_budget_and_verification_comparison_fails_on_nan() -> None:
    from hwopt.search.objective import Budgets, Objective, within
    from hwopt.fidelity.verify import compare_arrays

    figures = {"latency_us": np.array([10.0, np.nan, np.inf]), "memory_bytes": np.array([1.0, 1.0, 1.0])}
    objective = Objective(Budgets(max_memory=100, max_latency=20.0))
    assert list(objective.violation(figures) > 0) == [False, True, True]
    assert all(objective.fitness(figures)[1:] >= 1e15)
    assert Objective(Budgets()).violation(figures).tolist()[0] == 0.0 and all(
        Objective(Budgets()).violation(figures)[1:] > 0)
    assert objective.shortfall({"latency_us": math.nan, "memory_bytes": 1.0})
    assert within(0.1, 0.5) and within(0.1, None)
    assert not within(math.nan, 0.5) and not within(math.inf, 0.5) and not within(math.nan, None)
    reference = np.ones((2, 10))
    for bad in (np.nan, np.inf):
        candidate = reference.copy()
        candidate[0, 3] = bad
        comparison = compare_arrays("y", reference, candidate)
        assert not comparison.within_tolerance and not math.isfinite(comparison.rel_l2)


def test_no_model_with_a_non_finite_number_is_ever_written(tmp_path: Path) -> None:
    from hwopt.io.model import save_model

    model = tiny_model()
    weights = numpy_helper.to_array(model.graph.initializer[2]).copy()
    weights[0, 0, 1, 1] = np.inf
    model.graph.initializer[2].CopyFrom(numpy_helper.from_array(weights, "w2"))
    with pytest.raises(HwoptError, match="'w2' holds non-finite values"):
        save_model(model, tmp_path / "o.onnx")
    constant = tiny_model()
    constant.graph.node.insert(0, helper.make_node("Constant", [], ["k"], name="k", value=numpy_helper.from_array(
        np.array([1.0, np.nan], np.float32))))
    with pytest.raises(HwoptError, match="'k' holds non-finite values"):
        save_model(constant, tmp_path / "o.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_non_finite_weights_is_refused_before_the_work(tmp_path: Path) -> None:
    model = tiny_model()
    weights = numpy_helper.to_array(model.graph.initializer[6]).copy()
    weights[0, 0, 0, 0] = np.nan
    model.graph.initializer[6].CopyFrom(numpy_helper.from_array(weights, "w4"))
    onnx.save(model, tmp_path / "nan.onnx")
    refused(["apply", tmp_path / "nan.onnx", "-o", tmp_path / "o.onnx", "--rule", "dw-to-dense"], "non-finite")
    assert not (tmp_path / "o.onnx").exists()


# -- inputs never written, outputs never colliding --------------------------------------------------------

def test_the_inputs_external_data_is_never_written(tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "m.onnx", external=True)
    data = tmp_path / "m.onnx.data"
    before = digest(data)
    refused(["apply", model, "-o", data, "--rule", "dw-to-dense"], "refusing to overwrite the input")
    (tmp_path / "alias.data").symlink_to(data)
    refused(["apply", model, "-o", tmp_path / "alias.data", "--rule", "dw-to-dense"], "refusing to overwrite")
    refused(["optimize", model, "-t", "cpu", "--report", data], "refusing to overwrite the input")
    # -o x.onnx would put its own external data in x.onnx.data: the input's, when that is its name.
    onnx.save(tiny_model(), tmp_path / "a.onnx", save_as_external_data=True, location="x.onnx.data",
              size_threshold=0)
    shared = digest(tmp_path / "x.onnx.data")
    refused(["apply", tmp_path / "a.onnx", "-o", tmp_path / "x.onnx", "--rule", "dw-to-dense"],
            "refusing to overwrite the input")
    refused(["optimize", model, "-t", "cpu", "-o", tmp_path / "r.onnx", "--save-rules", tmp_path / "r.onnx.data"],
            "--save-rules and -o's external data name the same file")
    assert digest(data) == before and digest(tmp_path / "x.onnx.data") == shared


@pytest.mark.parametrize("flags, message", [
    (["-o", "{d}/x.onnx", "--report", "{d}/x.onnx"], "-o and --report name the same file"),
    (["-o", "{d}/x.onnx", "--save-rules", "{d}/x.onnx"], "-o and --save-rules name the same file"),
    (["-o", "{d}/x.onnx", "--report", "{d}/r.md", "--save-rules", "{d}/sub/../r.md"],
     "--report and --save-rules name the same file"),
])
def test_colliding_outputs_are_refused_before_the_work(tmp_path: Path, tiny: Path, flags, message) -> None:
    code, out, err = cli("optimize", tiny, "-t", "cpu", "--max-latency", "1s",
                         *[f.format(d=tmp_path) for f in flags])
    assert code == 2 and message in err, err
    assert "search" not in err and not (tmp_path / "x.onnx").exists()


# -- exit 2 before the work -------------------------------------------------------------------------------

def test_output_naming_a_directory_or_an_unwritable_place(tmp_path: Path, tiny: Path) -> None:
    refused(["apply", tiny, "-o", tmp_path, "--rule", "dw-to-dense"], "is a directory")
    refused(["optimize", tiny, "-t", "cpu", "-o", tmp_path], "is a directory")
    (tmp_path / "dir.md").mkdir()
    refused(["optimize", tiny, "-t", "cpu", "--report", tmp_path / "dir.md"], "is a directory")
    (tmp_path / "file").write_text("x")
    refused(["apply", tiny, "-o", tmp_path / "file" / "o.onnx", "--rule", "dw-to-dense"], "cannot write")
    refused(["optimize", tiny, "-t", "cpu", "--report", tmp_path / "file" / "r.md"], "cannot write")


def test_several_models_check_every_output_before_the_work(tmp_path: Path) -> None:
    first, second = write_tiny(tmp_path / "a.onnx", external=True), write_tiny(tmp_path / "b.onnx", seed=1)
    (tmp_path / "file").write_text("x")
    refused(["optimize", first, second, "-t", "cpu", "-o", tmp_path / "file" / "out"], "cannot write")
    refused(["optimize", first, second, "-t", "cpu", "--report", tmp_path / "file" / "reports"], "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "a.onnx.data", "b.onnx", "file"]


def test_train_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    table.write_text("kind\n")
    refused(["train", table, "-o", table], "refusing to overwrite the input")
    (tmp_path / "file").write_text("x")
    refused(["train", table, "-o", tmp_path / "file"], "is a file, not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(tmp_path: Path, tiny: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        refused(["optimize", tiny, "-t", "cpu", "-o", locked / "o.onnx"], "cannot write")
        refused(["optimize", tiny, "-t", "cpu", "--report", locked / "r.md"], "cannot write")
    finally:
        locked.chmod(0o755)


def test_report_into_a_missing_directory_is_created(tmp_path: Path, tiny: Path, exact_rules: Path) -> None:
    report, out = tmp_path / "new" / "deeper" / "report.md", tmp_path / "out" / "o.onnx"
    code, _, err = cli("optimize", tiny, "-t", "cpu", "--rules", exact_rules, "-o", out, "--report", report, "-q")
    assert code == 0, err
    assert report.read_text().startswith("#") and out.is_file()


@pytest.mark.parametrize("flag, value", [("--max-memory", "0B"), ("--max-memory", "0.0KiB"), ("--max-memory", "0MiB"),
                                         ("--max-latency", "0ms"), ("--max-latency", "0.0s"), ("--max-latency", "0us")])
def test_zero_budgets_are_refused(tmp_path: Path, tiny: Path, flag: str, value: str) -> None:
    refused(["optimize", tiny, "-t", "cpu", flag, value, "-o", tmp_path / "o.onnx"], "must be positive")


def test_npy_and_string_calibration_files_are_refused(tmp_path: Path, tiny: Path) -> None:
    np.save(tmp_path / "c.npy", samples())
    refused(["apply", tiny, "-o", tmp_path / "o.onnx", "--rule", "dw-to-dense", "--calibration",
             tmp_path / "c.npy"], "a .npy file")
    np.savez(tmp_path / "s.npz", x=np.full((16, 8, 8, 8), "a"))
    refused(["apply", tiny, "-o", tmp_path / "o.onnx", "--rule", "dw-to-dense", "--calibration",
             tmp_path / "s.npz"], "holds str")
    np.savez(tmp_path / "c.npz", x=samples().astype(np.complex64))
    refused(["apply", tiny, "-o", tmp_path / "o.onnx", "--rule", "dw-to-dense", "--calibration",
             tmp_path / "c.npz"], "holds complex")


def test_external_data_outside_the_models_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_tiny(tmp_path / "sub" / "m.onnx", external=True)
    model = onnx.load(tmp_path / "sub" / "m.onnx", load_external_data=False)
    (tmp_path / "sub" / "m.onnx.data").rename(tmp_path / "outside.data")
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.data"
    onnx.save(model, tmp_path / "sub" / "m.onnx")
    refused(["inspect", tmp_path / "sub" / "m.onnx"], "outside the model's directory")


def test_an_input_shape_needing_hundreds_of_gib_is_refused(tmp_path: Path) -> None:
    onnx.save(tiny_model(batch="N"), tmp_path / "dyn.onnx")
    model = onnx.load(tmp_path / "dyn.onnx")
    for value in list(model.graph.input) + list(model.graph.output):
        for axis in (2, 3):
            value.type.tensor_type.shape.dim[axis].Clear()
            value.type.tensor_type.shape.dim[axis].dim_param = "HW"[axis - 2]
    onnx.save(model, tmp_path / "dyn.onnx")
    line = refused(["inspect", tmp_path / "dyn.onnx", "--input-shape", "x=1x8x100000x100000"], "GiB")
    assert "298 GiB" in line, line


def test_random_samples_needing_hundreds_of_gib_are_refused(tmp_path: Path, tiny: Path) -> None:
    refused(["apply", tiny, "-o", tmp_path / "o.onnx", "--rule", "dw-to-dense", "--calibration-samples",
             "100000000"], "100,000,016 random samples of the inputs need 381.5 GiB")


def test_a_zero_batch_dim_is_refused(tmp_path: Path) -> None:
    onnx.save(tiny_model(batch=0), tmp_path / "zero.onnx")
    refused(["inspect", tmp_path / "zero.onnx"], "dimension 1 (counted from 1) of input 'x' is 0")


def test_a_node_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    model = tiny_model()
    model.graph.node[0].name = "EXPANDNAME"
    (tmp_path / "bad.onnx").write_bytes(model.SerializeToString().replace(b"EXPANDNAME", b"EXPAN\xffNAME"))
    refused(["inspect", tmp_path / "bad.onnx"], "a node's name b'EXPAN\\xffNAME' is not valid UTF-8")
    refused(["apply", tmp_path / "bad.onnx", "-o", tmp_path / "o.onnx", "--rule", "dw-to-dense"], "not valid UTF-8")


def test_a_weight_with_less_data_than_its_shape_is_refused(tmp_path: Path) -> None:
    """Found by the fuzz suite: a flipped dim made the finiteness check fail with a ValueError (exit 3)."""
    model = tiny_model()
    model.graph.initializer[2].dims[:] = [16, 1, 3]
    onnx.save(model, tmp_path / "short.onnx")
    refused(["apply", tmp_path / "short.onnx", "-o", tmp_path / "o.onnx", "--rule", "dw-to-dense"],
            "tensor 'w2' (shape [16, 1, 3]) does not hold the data its shape needs")


def test_a_model_onnxruntime_rejects_is_one_line_without_its_log(tmp_path: Path) -> None:
    model = tiny_model()
    model.graph.initializer.append(numpy_helper.from_array(np.array([20], np.int64), "index"))
    model.graph.node.append(helper.make_node("Gather", ["y", "index"], ["z"], name="gather", axis=1))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 1, 8, 8]))
    onnx.save(model, tmp_path / "oob.onnx")
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("HWOPT_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "hwopt.cli", "apply", str(tmp_path / "oob.onnx"), "-o",
                           str(tmp_path / "o.onnx"), "--rule", "dw-to-dense"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "onnxruntime cannot run the model" in done.stderr, done.stderr
    refused(["measure", tmp_path / "oob.onnx", "-t", "cpu"], "onnxruntime cannot run the model")
    refused(["estimate", tmp_path / "oob.onnx", "-t", "cpu"], "onnxruntime cannot run the model")


# -- validation gaps --------------------------------------------------------------------------------------

def test_unknown_top_level_tables_are_warned_about(tmp_path: Path, tiny: Path) -> None:
    rules = tmp_path / "r.toml"
    rules.write_text('[[rule]]\nname = "dw-to-dense"\n\n[serach]\np = 8\n')
    code, _, err = cli("apply", tiny, "-o", tmp_path / "o.onnx", "--rules", rules, "-q")
    assert code == 0, err
    assert "hwopt: warning:" in err and "'serach'" in err and "[[rule]], [search]" in err, err


def test_a_site_glob_matching_nothing_is_warned_about(tmp_path: Path, tiny: Path) -> None:
    code, _, err = cli("apply", tiny, "-o", tmp_path / "o.onnx", "--rule", "align-channels@ch:nothing*", "-q")
    assert code == 0, err
    assert "hwopt: warning:" in err and "'ch:nothing*' matches no ch site" in err and "ch:expand" in err, err


def test_optimize_accepts_the_fallback_its_advice_names(tmp_path: Path, tiny: Path, exact_rules: Path) -> None:
    code, _, err = cli("optimize", tiny, "-t", "cpu", "--rules", exact_rules, "--allow-fallback", "-q",
                       "-o", tmp_path / "o.onnx")
    assert code == 0, err


# -- files: umask, temporaries, atomic reports ----------------------------------------------------------------

def test_written_files_follow_the_umask(tmp_path: Path, tiny: Path, exact_rules: Path) -> None:
    old = os.umask(0o022)
    try:
        code, _, err = cli("optimize", tiny, "-t", "cpu", "--rules", exact_rules, "-o", tmp_path / "o.onnx",
                           "--report", tmp_path / "r.md", "--save-rules", tmp_path / "s.toml", "-q")
    finally:
        os.umask(old)
    assert code == 0, err
    for name in ("o.onnx", "r.md", "s.toml"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert all_finite(tmp_path / "o.onnx")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    from hwopt.io.atomic import atomic_write

    target = tmp_path / "report.md"
    target.write_text("old report\n")

    def disk_full(handle) -> None:
        handle.write(b"half a rep")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(HwoptError, match="No space left"):
        atomic_write(target, disk_full)
    assert target.read_text() == "old report\n" and sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_a_terminated_write_leaves_no_temporary(tmp_path: Path) -> None:
    """SIGTERM (a kill, a CI timeout) during a write: the CLI's handler unwinds, the temporary goes."""
    script = (
        "import signal, sys, time\n"
        "from hwopt.io.atomic import atomic_write\n"
        "from hwopt.cli import _terminate\n"
        "signal.signal(signal.SIGTERM, _terminate)\n"
        "def slow(handle):\n"
        "    handle.write(b'half')\n"
        "    handle.flush()\n"
        "    time.sleep(60)\n"
        "try:\n"
        "    atomic_write(sys.argv[1], slow)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(143)\n")
    target = tmp_path / "o.onnx"
    process = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=ROOT)
    try:
        for _ in range(600):
            if any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
                break
            time.sleep(0.05)
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "the write never started"
        process.terminate()
        assert process.wait(timeout=60) == 143
    finally:
        process.kill()
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path: Path, tiny: Path) -> None:
    from hwopt.io.atomic import temporary_name

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "o.onnx"
    stale = tmp_path / temporary_name(out, pid=dead.pid)
    stale.write_bytes(b"half a model")
    alive = tmp_path / temporary_name(out, pid=os.getppid())  # a running process's: left alone
    alive.write_bytes(b"still writing")
    other_host = tmp_path / temporary_name(out, pid=dead.pid, host="elsewhere")
    other_host.write_bytes(b"another machine's")
    code, _, err = cli("apply", tiny, "-o", out, "--rule", "dw-to-dense", "-q")
    assert code == 0, err
    assert not stale.exists() and alive.exists() and other_host.exists()
    assert socket.gethostname() in stale.name


def _grouped_head_model(path: Path) -> Path:
    """The tiny model with its head as a grouped (not depthwise) conv, a kind neither estimator was trained on."""
    model = onnx.load(write_tiny(path))
    weight = next(i for i in model.graph.initializer if i.name == "w4")
    weight.CopyFrom(numpy_helper.from_array(
        (np.random.default_rng(1).standard_normal((12, 4, 1, 1)) * 0.3).astype(np.float32), "w4"))
    next(n for n in model.graph.node if n.name == "head").attribute.append(helper.make_attribute("group", 2))
    onnx.save(model, path)
    return path


def test_optimize_of_several_models_honours_allow_fallback(tmp_path: Path) -> None:
    models = [_grouped_head_model(tmp_path / f"{name}.onnx") for name in "ab"]
    code, _, err = cli("optimize", *models, "-t", "cpu", "-q", "-o", tmp_path / "refused")
    assert code == 2 and "--allow-fallback" in err, err
    code, _, err = cli("optimize", *models, "-t", "cpu", "-q", "-o", tmp_path / "out", "--allow-fallback")
    assert code == 0, err
    assert all((tmp_path / "out" / f"{name}.hwopt.onnx").is_file() for name in "ab")
