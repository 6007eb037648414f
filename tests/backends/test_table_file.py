"""Crash-safe measurement tables (hwopt.backends.table_file): real kills, full disks, torn rows, cut gzip.

The kills are real: a child process is given a file-size limit (RLIMIT_FSIZE) that falls inside a batch,
so the kernel writes part of the batch and then kills the writer with SIGXFSZ in the middle of its
append. With SIGXFSZ ignored (Python's default) the same limit is a full disk: the write fails (EFBIG).
"""

from __future__ import annotations

import gzip
import os
import resource
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from hwopt.backends.base import TABLE_COLUMNS, Measurement
from hwopt.backends.table_file import read_table, write_table
from hwopt.backends.table_file import TableAppender, TableWarning, done_kernels
from hwopt.errors import HwoptError
from hwopt.analysis.kernel import Kernel

REPO = Path(__file__).resolve().parents[2]
BATCH = 25


def _rows(count: int, start: int = 0) -> list[Measurement]:
    return [Measurement(Kernel("conv", c, c, 8, 8, 8, 8, 3, 3, 1, 1, "relu"), 10.0 + c, 100.0 * c, "test",
                        {"machine": "x", "note": "a, \"quoted\" field"}) for c in range(1 + start, 1 + start + count)]


# The writer: appends batches of BATCH rows, batch after batch, through the public appender.
_WRITER = textwrap.dedent("""
    import signal, sys
    from hwopt.backends.table_file import TableAppender
    from hwopt.errors import HwoptError
    from tests.backends.test_table_file import BATCH, _rows
    if sys.argv[3] == "kill":
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # the OS kills the writer at the size limit
    rows = _rows(int(sys.argv[2]))
    try:
        with TableAppender(sys.argv[1]) as table:
            for start in range(0, len(rows), BATCH):
                table.append(rows[start:start + BATCH])
    except HwoptError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
""")


def _limited(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _write_limited(path: Path, count: int, limit: int, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _WRITER, str(path), str(count), mode], cwd=REPO,
                          capture_output=True, text=True, timeout=60, preexec_fn=_limited(limit))


def _batch_ends(path: Path, count: int) -> list[int]:
    """The table's size after each batch, from an unlimited run into a scratch copy."""
    scratch = path.with_name("scratch" + "".join(path.suffixes))
    sizes = []
    with TableAppender(scratch) as table:
        rows = _rows(count)
        for start in range(0, count, BATCH):
            table.append(rows[start:start + BATCH])
            sizes.append(scratch.stat().st_size)
    scratch.unlink()
    return sizes


def _read_quietly(path: Path) -> tuple[list[Measurement], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = read_table(path)
    return rows, [str(w.message) for w in caught if issubclass(w.category, TableWarning)]


@pytest.mark.parametrize("name", ["table.csv", "table.csv.gz"])
def test_a_writer_killed_mid_append_leaves_a_readable_table_and_resume_gives_every_kernel_once(
        tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    ends = _batch_ends(path, 100)
    limit = (ends[1] + ends[2]) // 2  # inside the third batch's write
    killed = _write_limited(path, 100, limit, "kill")
    assert killed.returncode == -signal.SIGXFSZ, killed.stderr
    assert path.stat().st_size == limit  # the third batch is on disk in part: a torn tail

    rows, messages = _read_quietly(path)
    assert len(messages) == 1 and "interrupted append" in messages[0]
    expected = _rows(100)
    assert rows == expected[:len(rows)] and 2 * BATCH <= len(rows) < 3 * BATCH  # only complete rows, in order

    with pytest.warns(TableWarning, match="cut off"):
        with TableAppender(path) as table:
            assert table.done == {m.kernel for m in rows}
            todo = [m for m in expected if m.kernel not in table.done]
            for start in range(0, len(todo), BATCH):
                table.append(todo[start:start + BATCH])
    final, messages = _read_quietly(path)
    assert messages == []  # repaired: nothing torn, nothing glued
    assert sorted(final, key=lambda m: m.kernel.cin) == expected


@pytest.mark.parametrize("name", ["table.csv", "table.csv.gz"])
def test_a_full_disk_fails_the_append_and_keeps_the_batches_before(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    ends = _batch_ends(path, 100)
    full = _write_limited(path, 100, (ends[1] + ends[2]) // 2, "full")  # EFBIG: as ENOSPC for the writer
    assert full.returncode == 2 and full.stderr.count("\n") == 1, full.stderr
    assert "cannot append" in full.stderr and f"keeps the {2 * BATCH} rows" in full.stderr
    assert path.stat().st_size == ends[1]  # the failed batch was truncated away
    rows, messages = _read_quietly(path)
    assert rows == _rows(2 * BATCH) and messages == []


def test_a_torn_csv_row_is_dropped_and_the_next_append_is_not_glued_to_it(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_table(path, _rows(10))
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # the last row cut inside its meta column
    rows, messages = _read_quietly(path)
    assert rows == _rows(9) and "a torn last row" in messages[0]
    with pytest.warns(TableWarning):
        write_table(path, _rows(3, start=9), append=True)
    rows, messages = _read_quietly(path)
    assert rows == _rows(12) and messages == []
    assert path.read_bytes().count(b"\n") == 13


def test_a_hand_written_csv_without_a_final_line_end_keeps_its_last_row(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("kind,cin,cout,latency_us\nconv,8,8,12.5\ndwconv,8,8,3", encoding="utf-8")
    rows, messages = _read_quietly(path)
    assert [m.latency_us for m in rows] == [12.5, 3.0] and messages == []
    with pytest.raises(HwoptError, match="lacks the column"):  # hwopt's rows would not line up with it
        write_table(path, _rows(1), append=True)
    columns = ",".join(reversed(TABLE_COLUMNS))  # every column, in another order
    write_table(path, [])
    path.write_text(columns + "\n" + ",".join(reversed(list(_rows(1)[0].row().values()))).replace(
        '"', '""').replace('{""', '"{""').replace('}', '}"'), encoding="utf-8")
    assert _read_quietly(path) == (_rows(1), [])
    write_table(path, _rows(2)[1:], append=True)  # a line end first, then the row in the file's order
    rows, messages = _read_quietly(path)
    assert rows == _rows(2) and messages == []


def test_a_truncated_gzip_table_gives_its_complete_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    expected = _rows(300)
    write_table(path, expected)  # one member, as a finished profile leaves it
    data = path.read_bytes()
    for cut in (len(data) - 5, len(data) * 2 // 3, len(data) // 3):
        path.write_bytes(data[:cut])
        with pytest.raises(EOFError):
            with gzip.open(path, "rt") as handle:
                handle.read()  # what made the table unreadable before
        rows, messages = _read_quietly(path)
        assert rows == expected[:len(rows)] and len(messages) == 1
        assert f"{len(rows)} complete row(s) recovered" in messages[0]
        assert len(rows) >= (cut * 300 // len(data)) - 20, (cut, len(rows))  # only the last few are lost
    with pytest.warns(TableWarning):
        assert done_kernels(path) == {m.kernel for m in rows}


def test_damage_in_the_middle_of_a_gzip_table_is_an_error_not_a_silent_cut(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with TableAppender(path) as table:
        for start in range(0, 60, 20):
            table.append(_rows(20, start))
    data = bytearray(path.read_bytes())
    second = data.find(b"\x1f\x8b\x08", 1)
    data[second + 40] ^= 0xFF  # corrupt the second of three members
    path.write_bytes(bytes(data))
    with pytest.raises(HwoptError, match="damaged in its middle"):
        read_table(path)
    with pytest.raises(HwoptError, match="damaged in its middle"):
        TableAppender(path).open()
    assert path.read_bytes() == bytes(data)  # never cut


def test_a_second_writer_is_refused_while_one_is_open(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with TableAppender(path) as table:
        table.append(_rows(5))
        other = subprocess.run([sys.executable, "-c", _WRITER, str(path), "5", "full"], cwd=REPO,
                               capture_output=True, text=True, timeout=60)
        assert other.returncode == 2 and "another process is writing" in other.stderr
        table.compact()  # still locked after compaction (a new file under the name)
        assert subprocess.run([sys.executable, "-c", _WRITER, str(path), "5", "full"], cwd=REPO,
                              capture_output=True, text=True, timeout=60).returncode == 2
        table.append(_rows(5, start=5))
    assert read_table(path) == _rows(10)
    assert gzip.open(path).read().count(b"\n") == 11  # zcat reads it: the documented format


def test_shipped_tables_still_load() -> None:
    for name in ("cpu", "npu32"):
        rows, messages = _read_quietly(REPO / "estimator" / name / "measurements.csv.gz")
        assert len(rows) > 900 and messages == []


# ---------------------------------------------------------------- hwopt profile itself

def _table_target(tmp_path: Path, kernels: list[Kernel]) -> Path:
    """A target measured by lookup in a table (backend "table"): a fast, real backend for `hwopt profile`."""
    # A meta column as long as a real one (machine, versions, settings): ~250 bytes a row.
    meta = {"machine": "a shared 2-core VM " * 5, "sdk": "2.1", "repeats": 10, "threads": 1, "note": "x" * 80}
    write_table(tmp_path / "device.csv", [Measurement(k.isolated(), 5.0 + i, None, "device", meta)
                                          for i, k in enumerate(kernels)])
    target = tmp_path / "device.toml"
    target.write_text('name = "device"\nparallelism = 8\ndtype = "fp32"\nbackend = "table"\n'
                      '[backend_settings]\ntable = "device.csv"\n')
    return target


def _tiny_model(path: Path) -> Path:
    """A small MobileNet-like model (8.5 kB: below the size limit the kill test sets) with 86 sweep kernels."""
    from examples.builder import GraphBuilder

    b = GraphBuilder("tiny", 13)
    x = b.input("x", 3, 32, 32)
    x = b.relu(b.conv(x, 8, 3, stride=2))
    x = b.conv(b.relu(b.conv(x, 8, 3, groups=8)), 16, 1)
    y = b.relu6(b.conv(x, 32, 1))
    y = b.conv(b.relu6(b.conv(y, 32, 3, stride=2, groups=32)), 16, 1)
    b.output(b.global_avg_pool(y), "out")
    path.write_bytes(b.build().SerializeToString())
    return path


@pytest.mark.slow  # a sweep killed and resumed (7 s of CPU)
def test_hwopt_profile_killed_mid_append_resumes_with_every_kernel_exactly_once(tmp_path: Path) -> None:
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.estimator.profile import sweep

    model = _tiny_model(tmp_path / "tiny.onnx")
    kernels = sweep(8, [load_canonical(model, [])[1]], examples=False)
    assert len(kernels) > 64  # three batches of 32 at least
    target = _table_target(tmp_path, kernels)
    args = ["profile", "--target", str(target), "--no-examples", "--from", str(model), "-q"]
    whole = tmp_path / "whole.csv"
    assert subprocess.run([sys.executable, "-m", "hwopt.cli", *args, "-o", str(whole)], cwd=REPO,
                          capture_output=True, text=True, timeout=120).returncode == 0
    # Rows are about the same length: this size falls inside the third batch (kernels 65..).
    limit = whole.stat().st_size * (64 + (len(kernels) - 64) // 2) // len(kernels)
    assert limit > 2 * model.stat().st_size  # the CLI's temporary copies of the model stay below it
    out = tmp_path / "out.csv"
    # The CLI with SIGXFSZ at its default (Python ignores it): killed by the OS inside its third append.
    # The limit is per file: no .pyc, and onnxruntime's telemetry database (1.7 MB under ~/.cache) off and
    # in a fresh home, so that the table is the only file that reaches it.
    cli = ("import signal, sys, onnxruntime; onnxruntime.disable_telemetry_events(); "
           "signal.signal(signal.SIGXFSZ, signal.SIG_DFL); from hwopt.cli import main; sys.argv[0] = 'hwopt'; main()")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(tmp_path / "home")}
    killed = subprocess.run([sys.executable, "-c", cli, *args, "-o", str(out)], cwd=REPO, capture_output=True,
                            text=True, timeout=120, preexec_fn=_limited(limit), env=env)
    assert killed.returncode == -signal.SIGXFSZ, (killed.returncode, killed.stderr)
    assert out.stat().st_size == limit  # killed in the middle of writing a row
    kept, _ = _read_quietly(out)
    assert 64 <= len(kept) < len(kernels)  # the batches before the kill are there, and rows of the third
    resumed = subprocess.run([sys.executable, "-m", "hwopt.cli", *args, "-o", str(out)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.startswith("hwopt: warning:") and "interrupted append" in resumed.stderr
    assert resumed.stderr.count("\n") == 1  # one plain line, not Python's warning format
    rows, messages = _read_quietly(out)
    assert messages == [] and len(rows) == len(kernels)  # every kernel exactly once
    assert {m.kernel for m in rows} == {m.kernel for m in read_table(whole)}
    assert rows[:len(kept)] == kept  # kept as they were, not measured again


def test_a_table_written_before_weight_zeros_takes_rows_that_mean_what_its_rows_mean(tmp_path: Path) -> None:
    """A table without the weight_zeros column (written before it existed) reads as 0 and is appended to
    with rows of 0; a row of a pruned kernel is refused in one line rather than written without its figure."""
    from dataclasses import replace

    from hwopt.backends.table_file import encode_rows

    path = tmp_path / "old.csv"
    old_columns = [c for c in TABLE_COLUMNS if c != "weight_zeros"]
    path.write_text(encode_rows(_rows(3), header=True, columns=old_columns))
    assert "weight_zeros" not in path.read_text().splitlines()[0]
    assert [m.kernel.weight_zeros for m in read_table(path)] == [0, 0, 0]
    with TableAppender(path) as table:
        table.append(_rows(2, start=3))
        pruned = Measurement(replace(_rows(1, start=9)[0].kernel, weight_zeros=40), 5.0)
        with pytest.raises(HwoptError, match="no weight_zeros column"):
            table.append([pruned])
    assert len(read_table(path)) == 5
