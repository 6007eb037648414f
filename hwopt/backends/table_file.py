"""Measurement tables on disk, crash-safe: durable batch appends, torn-tail detection, resume.

A profile runs for days and can be killed, or fill its disk, in the middle of
an append. The format stays the documented one (CSV, or CSV.gz by the suffix;
``docs/measurements.md``), so ``hwopt train``, pandas and zcat read it as
before; safety comes from how it is appended and read:

- **One batch, one write, then fsync.** A batch of rows is encoded whole
  (CSV: its lines; ``.gz``: one complete gzip member, whose CRC-32 and length
  trailer check it) and written with one ``write`` on the end of the file,
  then ``fsync``. When ``append`` returns the batch is on disk; a failed write
  (disk full) is truncated back, so the table holds exactly the batches before.
- **A torn tail is detected on read and dropped with a ``TableWarning``**:
  plain CSV, a last line without its line end that does not parse as a whole
  row; ``.gz``, a truncated or corrupt last member, from which the complete
  rows are recovered (only the cut row is lost). Rows before it read as always.
- **The appender repairs the tail before it appends** (truncates the torn
  bytes, re-appends rows recovered from a cut gzip member, adds a missing
  line end), so nothing is glued to a half row, and locks the table
  (``flock``) so a second writer is refused rather than interleaved.

API (the profile loop, and any executor that feeds it, e.g. a Ray driver as
the single writer)::

    with TableAppender(path) as table:   # repairs a torn tail (warns), locks
        table.done                        # set[Kernel] already in the table: the resume set
        table.append(measurements)        # durable when it returns; HwoptError on a full disk
        table.compact()                   # .gz: rewrite as one member, atomically (optional, at the end)
    read_table(path)                      # the complete rows; a torn tail dropped with a TableWarning
    done_kernels(path)                    # the resume set without writing (empty for a missing table)
    write_table(path, rows)               # a whole table, atomically (temporary file, fsync, rename)

A kernel measured twice (a batch re-run after a kill, if it was durable) is
harmless to readers (``merge_repeats``), but the appender's ``done`` set lets
a resume skip it, so the table keeps every kernel once.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from hwopt.io.atomic import atomic_write
from hwopt.backends.base import LATER_COLUMNS, TABLE_COLUMNS, Measurement, kernel_from_row
from hwopt.errors import HwoptError
from hwopt.analysis.kernel import Kernel

try:
    import fcntl
except ImportError:  # Windows: no advisory lock (a second writer is not refused there)
    fcntl = None

LINE_END = "\r\n"  # what csv writes by default: the shipped tables use it
_GZIP_MAGIC = b"\x1f\x8b\x08"


class TableWarning(UserWarning):
    """A table's torn tail (an interrupted append) was dropped or repaired."""


def _gz(path: Path) -> bool:
    return path.suffix == ".gz"


# ---------------------------------------------------------------- rows

def _measurement(row: dict[str, str | None]) -> Measurement:
    dram = row.get("dram_bytes") or ""
    return Measurement(kernel_from_row(row), float(row["latency_us"]), float(dram) if dram else None,
                       row.get("backend") or "", json.loads(row["meta"]) if row.get("meta") else {})


def _parses_whole(header: str, line: str) -> bool:
    """True when ``line`` is a complete row under ``header`` (every column, values that parse)."""
    if line.count('"') % 2:
        return False  # cut inside a quoted field (a row cut just after meta's opening quote reads as empty)
    try:
        names = next(csv.reader([header]))
        values = next(csv.reader([line]))
        if len(values) != len(names):
            return False
        _measurement(dict(zip(names, values)))
        return True
    except (ValueError, TypeError, KeyError, json.JSONDecodeError, csv.Error, StopIteration):
        return False


def encode_rows(measurements: Iterable[Measurement], header: bool,
                columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """Rows as CSV text (each ending in LINE_END) in ``columns``' order, with the header line first when asked."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), restval="", lineterminator=LINE_END)
    if header:
        writer.writeheader()
    absent = [c for c in LATER_COLUMNS if c not in columns]
    for m in measurements:
        row = m.row()
        for name in absent:  # an older table: its rows mean the column's default, so only those fit
            if row.pop(name) != LATER_COLUMNS[name]:
                raise HwoptError(f"the table has no {name} column, which {m.kernel.describe()} needs; "
                                 "write to a new table (-o) instead")
        writer.writerow(row)
    return out.getvalue()


# ---------------------------------------------------------------- decoding a file

@dataclass
class _Contents:
    text: str  # the header and every complete row
    keep: int  # bytes of the file before its torn tail (the whole file when sound)
    recovered: str  # .gz: complete rows decoded from a cut member (in ``text``; past ``keep`` on disk)
    missing_end: str  # the line end a whole last row lacks ("" when it has one; hand-written CSVs often lack it)
    dropped: str  # what was dropped, for the warning ("" when nothing)


def _split_tail(text: str) -> tuple[str, str, str]:
    """(complete text, torn last line or "", the line end a whole last row lacks) of decoded table text."""
    if not text or text.endswith("\n"):
        return text, "", ""
    start = text.rfind("\n") + 1
    last = text[start:]
    if start > 0:
        header = text[:text.find("\n")].rstrip("\r")
        if _parses_whole(header, last.rstrip("\r")):
            return text, "", "\n" if last.endswith("\r") else LINE_END
    return text[:start], last, ""


def _decode_csv(data: bytes) -> _Contents:
    cut = len(data) if data.endswith(b"\n") else data.rfind(b"\n") + 1
    text = data[:cut].decode("utf-8")
    torn = f"a torn last row ({len(data) - cut} bytes)"
    try:
        tail = data[cut:].decode("utf-8")
    except UnicodeDecodeError:  # a multi-byte character cut in two
        return _Contents(text, cut, "", "", torn)
    whole, last, missing_end = _split_tail(text + tail)
    if last:
        return _Contents(whole, cut, "", "", torn)
    return _Contents(whole, len(data), "", missing_end, "")


def _decode_gz(data: bytes) -> _Contents:
    """Member by member: complete members are checked by their CRC; a cut last one gives its complete rows."""
    parts: list[bytes] = []
    pos = 0
    while pos < len(data):
        member = zlib.decompressobj(wbits=31)
        out = bytearray()
        try:
            for start in range(pos, len(data), 1 << 20):  # in steps: a corrupt spot keeps what came before it
                out += member.decompress(data[start:start + (1 << 20)])
                if member.eof:
                    break
        except zlib.error as exc:
            problem = f"a corrupt gzip member at byte {pos} ({exc})"
        else:
            if member.eof:
                parts.append(bytes(out))
                pos = len(data) - len(member.unused_data)
                continue
            problem = f"a truncated last gzip member ({len(data) - pos} bytes from byte {pos})"
        if _later_member(data, pos):
            raise HwoptError(f"{problem} with complete members after it: the table is damaged in its middle, "
                             "not by an interrupted append; repair it by hand")
        sound = b"".join(parts).decode("utf-8")
        partial = bytes(out)
        recovered = partial[:partial.rfind(b"\n") + 1].decode("utf-8")  # its complete lines
        rows = recovered.count("\n") - (0 if sound or not recovered else 1)  # less the header, if it was there
        return _Contents(sound + recovered, pos, recovered, "",
                         f"{problem}; {rows} complete row(s) recovered from it")
    text = b"".join(parts).decode("utf-8")
    whole, last, missing_end = _split_tail(text)
    if last:
        raise HwoptError("its last gzip member is complete but ends in a partial row: repair it by hand")
    return _Contents(whole, len(data), "", missing_end, "")


def _later_member(data: bytes, pos: int) -> bool:
    """True when a complete gzip member starts somewhere after ``pos`` (damage, not a torn tail)."""
    at = data.find(_GZIP_MAGIC, pos + 1)
    while at != -1:
        member = zlib.decompressobj(wbits=31)
        try:
            member.decompress(data[at:])
            if member.eof:
                return True
        except zlib.error:
            pass
        at = data.find(_GZIP_MAGIC, at + 1)
    return False


def _decode(path: Path, data: bytes) -> _Contents:
    try:
        return _decode_gz(data) if _gz(path) else _decode_csv(data)
    except UnicodeDecodeError as exc:
        raise HwoptError(f"{path}: cannot read the table (not UTF-8 text: {exc.reason} at byte {exc.start})") from None
    except HwoptError as exc:
        raise HwoptError(f"{path}: {exc}") from None


def _parse(path: Path, text: str) -> list[Measurement]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        names = reader.fieldnames or []
        missing = [c for c in ("kind", "cin", "cout", "latency_us") if c not in names]
        if missing:
            raise HwoptError(f"{path}: not a measurements table (missing column {missing[0]!r})")
        out = []
        for line, row in enumerate(reader, 2):
            try:
                out.append(_measurement(row))
            except (ValueError, TypeError, json.JSONDecodeError) as exc:
                raise HwoptError(f"{path}:{line}: bad row ({exc})") from None
        return out
    except csv.Error as exc:
        raise HwoptError(f"{path}: cannot read the table ({exc})") from None


def _warn_dropped(path: Path, contents: _Contents, action: str) -> None:
    if contents.dropped:
        warnings.warn(f"{path}: {contents.dropped}, left by an interrupted append (a kill or a full disk): "
                      f"{action}", TableWarning, stacklevel=3)


def read_table(path: str | Path) -> list[Measurement]:
    """Every complete row of a table; a torn tail (an interrupted append) is dropped with a TableWarning."""
    path = Path(path)
    if not path.is_file():
        raise HwoptError(f"{path}: no such measurements table")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HwoptError(f"{path}: cannot read the table ({exc.strerror or exc})") from None
    if not data:
        raise HwoptError(f"{path}: the table is empty (no header)")
    contents = _decode(path, data)
    if not contents.text:
        raise HwoptError(f"{path}: the table holds no complete header ({contents.dropped or 'empty'})")
    _warn_dropped(path, contents, "reading the rows before it")
    return _parse(path, contents.text)


def done_kernels(path: str | Path) -> set[Kernel]:
    """The kernels a table already holds (a resume skips them); empty when the table does not exist yet."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return set()
    return {m.kernel for m in read_table(path)}


# ---------------------------------------------------------------- writing

def _payload(path: Path, text: str) -> bytes:
    raw = text.encode("utf-8")
    return gzip.compress(raw, mtime=0) if _gz(path) else raw


def write_table(path: str | Path, measurements: Iterable[Measurement], append: bool = False) -> None:
    """Write a whole table atomically (a temporary file renamed over it), or append one durable batch."""
    path = Path(path)
    if append:
        with TableAppender(path) as table:
            table.append(list(measurements))
        return
    _replace(path, encode_rows(measurements, header=True))


def compact(path: str | Path) -> None:
    """Rewrite a finished ``.gz`` table as one gzip member (per-batch appends leave one each), atomically."""
    with TableAppender(path) as table:
        table.compact()


def _replace(path: Path, text: str) -> None:
    """The whole table, atomically, through the one atomic writer every hwopt output uses."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HwoptError(f"{path}: cannot write the table ({exc.strerror or exc})") from None
    payload = _payload(path, text)
    atomic_write(path, lambda handle: handle.write(payload))


class TableAppender:
    """The single writer of a table: repairs a torn tail on opening, then appends durable batches.

    Use as a context manager. ``done`` is the set of kernels in the table (kept
    up to date by ``append``). A second appender on the same table, in any
    process, is refused with HwoptError while this one is open.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.done: set[Kernel] = set()
        self.rows = 0
        self._fd: int | None = None
        self._needs_header = True
        self._prefix = ""
        self._columns: Sequence[str] = TABLE_COLUMNS

    def __enter__(self) -> "TableAppender":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise HwoptError(f"{path}: cannot open the table for writing ({exc.strerror or exc})") from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise HwoptError(f"{path}: another process is writing this table (a second profile into "
                                     "the same file?); wait for it or choose another -o") from None
            self._fd = fd
            self._repair()
        except BaseException:
            self.close()
            raise

    def _read_all(self) -> bytes:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        chunks, pos = [], 0
        while pos < size:
            chunk = os.pread(self._fd, min(size - pos, 1 << 24), pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
        return b"".join(chunks)

    def _repair(self) -> None:
        data = self._read_all()
        if not data:
            return
        contents = _decode(self.path, data)
        rows = _parse(self.path, contents.text) if contents.text else []
        if contents.dropped:
            recovered = " (the rows recovered from the cut member written again)" if contents.recovered else ""
            _warn_dropped(self.path, contents, f"cut off; {len(rows)} rows kept{recovered}")
            self._truncate(contents.keep)
            if contents.recovered:
                self._write(_payload(self.path, contents.recovered))
        self._needs_header = not contents.text
        self._prefix = contents.missing_end
        if contents.text:
            self._columns = self._check_columns(next(csv.reader([contents.text[:contents.text.find("\n")]])))
        self.done = {m.kernel for m in rows}
        self.rows = len(rows)

    def _check_columns(self, columns: list[str]) -> list[str]:
        """The file's own column order, which appended rows must follow; every hwopt column must be there."""
        missing = [c for c in TABLE_COLUMNS if c not in columns and c not in LATER_COLUMNS]
        if missing:
            raise HwoptError(f"{self.path}: the table lacks the column(s) {', '.join(missing)}, so hwopt's rows "
                             "cannot be appended to it; write to a new table (-o) instead")
        return columns

    def _truncate(self, size: int) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)

    def _write(self, payload: bytes) -> None:
        """Append ``payload`` durably, or truncate back to where it started and raise HwoptError."""
        assert self._fd is not None
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            try:
                self._truncate(start)
            except OSError:
                pass
            raise HwoptError(f"{self.path}: cannot append to the table ({exc.strerror or exc}); it keeps the "
                             f"{self.rows} rows written before") from None

    def append(self, measurements: Sequence[Measurement]) -> None:
        """Append one batch durably (one write, then fsync); the batch is in the table when this returns."""
        if self._fd is None:
            raise RuntimeError("TableAppender.append outside its 'with' block")
        if not measurements and not self._needs_header:
            return
        text = self._prefix + encode_rows(measurements, header=self._needs_header, columns=self._columns)
        self._write(_payload(self.path, text))
        self._prefix, self._needs_header = "", False
        self.done.update(m.kernel for m in measurements)
        self.rows += len(measurements)

    def compact(self) -> None:
        """Rewrite the table as one gzip member (appends leave one per batch), atomically, still locked."""
        if self._fd is None:
            raise RuntimeError("TableAppender.compact outside its 'with' block")
        contents = _decode(self.path, self._read_all())
        _replace(self.path, contents.text + contents.missing_end)
        # The name now holds a new file: later appends must go to it (and be locked there).
        fd = self._fd
        self._fd = None
        os.close(fd)
        self.open()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the flock
