"""A model over protobuf's 2 GiB limit (external data): it loads, `inspect`s, and an exact rule writes a valid
model over 2 GiB with its weights external (hwopt.io.held_weights).

The model is generated here: two 1x1 convs with 1.07 GiB of weights each (2.14 GiB of external data). It needs
about 5 GiB of free disk (input and output) and 6 GiB of available memory; it is skipped, saying which, when
the machine lacks either. Its files are removed at the end.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parents[2]
C0, C1 = 4096, 69997  # conv1: C0 -> C1 (C1 off the 32 grid: align-channels pads it to 70016), conv2: C1 -> C0
NEED_DISK = 5 * 2**30
NEED_MEMORY = 6 * 2**30


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return NEED_MEMORY  # not Linux: let the test run


def _write_model(folder: Path) -> Path:
    """big.onnx + big.onnx.data (2.14 GiB), written block by block (a 16 MiB random block tiled)."""
    rng = np.random.default_rng(0)
    data = folder / "big.onnx.data"
    tensors, offset = [], 0
    with open(data, "wb") as handle:
        for name, shape in (("W1", (C1, C0, 1, 1)), ("W2", (C0, C1, 1, 1))):
            block = (rng.standard_normal(1 << 22) / np.sqrt(shape[1])).astype(np.float32)
            count = int(np.prod(shape))
            for start in range(0, count, block.size):
                handle.write(block[:min(block.size, count - start)].tobytes())
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape,
                                 data_location=TensorProto.EXTERNAL)
            for key, value in (("location", data.name), ("offset", str(offset)), ("length", str(count * 4))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += count * 4
            tensors.append(tensor)
    nodes = [helper.make_node("Conv", ["x", "W1"], ["h"], name="conv1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "W2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C0, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C0, 1, 1])], tensors)
    path = folder / "big.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwopt.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def _weights(model_path: Path) -> dict[str, np.ndarray]:
    """The model's initializers as read-only memory maps of its data file (no copy)."""
    model = onnx.load(str(model_path), load_external_data=False)
    out = {}
    for tensor in model.graph.initializer:
        info = {e.key: e.value for e in tensor.external_data}
        assert tensor.data_location == TensorProto.EXTERNAL, tensor.name  # kept external
        out[tensor.name] = np.memmap(model_path.parent / info["location"], np.float32, "r", int(info["offset"]),
                                     tuple(tensor.dims))
    return out


@pytest.mark.slow  # writes and reads a 2 GiB model (131 s on 2 cores at load 15)
def test_a_model_over_2_gib_loads_inspects_and_an_exact_rule_writes_one(tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("big")
    free = shutil.disk_usage(folder).free
    if free < NEED_DISK:
        pytest.skip(f"needs {NEED_DISK / 2**30:.0f} GiB free disk for a model over 2 GiB and its output; "
                    f"{folder} has {free / 2**30:.1f} GiB")
    if _available_memory() < NEED_MEMORY:
        pytest.skip(f"needs {NEED_MEMORY / 2**30:.0f} GiB of available memory for a model over 2 GiB; "
                    f"{_available_memory() / 2**30:.1f} GiB available")
    try:
        model = _write_model(folder)
        data = folder / "big.onnx.data"
        assert data.stat().st_size > 2**31
        before = (hashlib.sha256(model.read_bytes()).hexdigest(), data.stat().st_size, data.stat().st_mtime_ns)

        shown = _cli("inspect", str(model))
        assert shown.returncode == 0, shown.stderr
        assert "573.42M params" in shown.stdout and "ch:conv1" in shown.stdout and "align-channels" in shown.stdout

        out = folder / "out" / "padded.onnx"
        done = _cli("apply", str(model), "-o", str(out), "--rule", "align-channels:mode=pad", "--eval-samples", "2",
                    "--json")
        assert done.returncode == 0, done.stderr
        assert '"exact": true' in done.stdout
        written = out.with_name("padded.onnx.data")
        assert out.stat().st_size < 4096 and written.stat().st_size > 2**31  # the weights external, over 2 GiB
        onnx.checker.check_model(str(out), full_check=True)  # by path: the checker reads the data file

        old, new = _weights(model), _weights(out)
        (w1_name,) = [n for n, w in new.items() if w.shape == (70016, C0, 1, 1)]
        (w2_name,) = [n for n, w in new.items() if w.shape == (C0, 70016, 1, 1)]
        w1, w2 = new[w1_name], new[w2_name]
        for rows in (slice(0, 50), slice(C1 - 50, C1)):  # the kept channels are the input's, byte for byte
            np.testing.assert_array_equal(w1[rows], old["W1"][rows])
            np.testing.assert_array_equal(w2[:, rows], old["W2"][:, rows])
        assert not w1[C1:].any() and not w2[:, C1:].any()  # padded channels: zero weights in and out
        del old, new, w1, w2
        assert before == (hashlib.sha256(model.read_bytes()).hexdigest(), data.stat().st_size,
                          data.stat().st_mtime_ns)  # the input never written
    finally:
        shutil.rmtree(folder, ignore_errors=True)
