"""Fuzzing the command line with a seeded generator: every case exits 0 or 2, never 3 or a traceback.

Four families of hostile input, on the tiny model of ``tests/tinymodel.py``, run in-process (typer's
runner: one interpreter, no start-up per case):

- byte flips in the graph structure of the model (not in the weights' raw bytes) -> inspect, and a
  fraction apply / estimate;
- random ``--rule`` strings from the rule grammar's pieces and junk -> apply;
- random rule files (TOML of random shape and types, sometimes broken) -> apply --rules, a fraction
  optimize --rules;
- random calibration files (NaN/Inf/huge values, odd dtypes, shapes, names, .npy, garbage) -> apply;
- output flags naming inputs (a model's external data too), each other, folders, unwritable places.

Each case checks: exit 0 or 2 (``optimize`` may say 1, no variant within budgets: that is its contract),
one ``hwopt: error:`` line with exit 2, no exception escaping, no written model with a non-finite
number, no input file changed (hashes before and after). The seed is fixed, so a run is repeatable;
``HWOPT_FUZZ_SEED`` / ``HWOPT_FUZZ_CASES`` explore further by hand.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from hwopt.cli import app
from tests.tinymodel import tiny_model

SEED = int(os.environ.get("HWOPT_FUZZ_SEED", "20261202"))
CASES = int(os.environ.get("HWOPT_FUZZ_CASES", "1000"))
# Shares of the cases per family (byte flips, --rule strings, rule files, calibration files).
SHARES = {"flip": 0.38, "rule": 0.27, "rulefile": 0.12, "calibration": 0.16, "outputs": 0.07}
# Few samples keep the refits (fuse-ibn's joint refit above all) to ~0.1 s on the tiny model.
SAMPLES = ["--calibration-samples", "8", "--eval-samples", "2"]
CHANNELS, SIZE = 4, 6

RULE_NAMES = ["fuse-ibn", "align-channels", "dw-to-dense", "depth-multiplier", "fuse_ibn", "", "FUSE-IBN",
              "align-channel", "dw-to-dense ", "ünïcode", "a" * 300]
PARAM_KEYS = ["p", "mode", "ridge", "ratio", "init", "project", "variance", "sites", "name", "", "P", "rat io"]
PARAM_VALUES = ["4", "6", "8", "16", "0", "-3", "1", "1024", "1025", "99999999999999999999", "0.5", "0.75",
                "1.25", "4.0", "4.5", "0.01", "nan", "NaN", "inf", "-inf", "1e400", "1e-400", "1e300", "true",
                "false", "pad", "trim", "lstsq", "linear", "random", "keep", "refit", "match", "", "=", "ü",
                "0x10", "1_000", " 8 "]
SITES = ["ibn0", "dw0", "ch:expand", "ch:project", "ch:head", "ch:*", "*", "ibn*", "dw*", "nothing*", "ibn42",
         "dw-1", "[", "[!a]*", "ch:", "", "?", "ibn0 ", "ünï*", "ch:expand,ch:expand"]
VALID_PARAMS = {
    "fuse-ibn": {"init": ['"linear"', '"random"', '"lstsq"'], "project": ['"keep"', '"refit"'], "ridge": ["0.01", "1"],
                 "sites": ['["ibn0"]', '["ibn*"]', '"ibn0"']},
    "align-channels": {"p": ["2", "6", "8"], "mode": ['"pad"', '"trim"'], "sites": ['["ch:*"]', '["ch:expand"]']},
    "dw-to-dense": {"sites": ['["dw0"]', '["dw*"]']},
    "depth-multiplier": {"ratio": ["0.5", "1.5"], "p": ["2", "4"], "sites": ['["ibn0"]']},
}
JUNK = [":", "@", ",", "=", " ", "\t", "\x00", "\\", "\"", "'", "[", "]", "{", "#", "*", "\n", "é", "\udcff"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "-"


def _finite_model(path: Path) -> bool:
    model = onnx.load(path)
    for tensor in model.graph.initializer:
        if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            if not np.isfinite(numpy_helper.to_array(tensor)).all():
                return False
    return True


def _structure_positions(data: bytes, model: onnx.ModelProto) -> list[int]:
    """Byte offsets of the serialised model outside the weights' raw data (the graph's structure)."""
    weights = np.zeros(len(data), dtype=bool)
    for tensor in model.graph.initializer:
        start = data.find(tensor.raw_data)
        if tensor.raw_data and start >= 0:
            weights[start:start + len(tensor.raw_data)] = True
    return [int(i) for i in np.flatnonzero(~weights)]


# -- generators: each returns (the CLI arguments, the input files it must not change) ------------------------

class Fuzzer:
    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root, self.rng = root, rng
        self.model = root / "tiny.onnx"
        onnx.save(tiny_model(channels=CHANNELS, size=SIZE), self.model)
        self.data = self.model.read_bytes()
        self.structure = _structure_positions(self.data, onnx.load(self.model))
        self.out = root / "out.onnx"
        self.report = root / "report.md"
        self.expensive = Counter()

    def flip(self) -> tuple[list[str], list[Path]]:
        rng = self.rng
        data = bytearray(self.data)
        for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
            at = rng.choice(self.structure)
            data[at] = rng.randrange(256) if rng.random() < 0.5 else data[at] ^ (1 << rng.randrange(8))
        path = self.root / "flipped.onnx"
        path.write_bytes(bytes(data))
        roll = rng.random()
        if roll < 0.2:
            args = ["apply", str(path), "-o", str(self.out), "--rule",
                    rng.choice(["align-channels:p=6", "dw-to-dense", "fuse-ibn", "align-channels:p=2,mode=trim"]),
                    "-q", *SAMPLES]
        elif roll < 0.215:  # loads the estimator first (~0.5 s): a few

            args = ["estimate", str(path), "-t", rng.choice(["cpu", "npu32"]), "--allow-fallback"]
        else:
            args = ["inspect", str(path)] + (["--json"] if rng.random() < 0.3 else [])
        return args, [path]

    def _rule_text(self) -> str:
        rng = self.rng
        text = rng.choice(RULE_NAMES[:4] if rng.random() < 0.7 else RULE_NAMES)
        if rng.random() < 0.6:
            keys = PARAM_KEYS[:7] if rng.random() < 0.8 else PARAM_KEYS
            items = [f"{rng.choice(keys)}={rng.choice(PARAM_VALUES)}" for _ in range(rng.randrange(1, 3))]
            if rng.random() < 0.1:
                items.append(rng.choice(PARAM_KEYS))  # no '='
            text += ":" + ",".join(items)
        if rng.random() < 0.5:
            text += "@" + ",".join(rng.choice(SITES) for _ in range(rng.randrange(0, 3)))
        for _ in range(rng.choice([0, 0, 0, 0, 0, 1, 2])):
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(JUNK) + text[at:]
        return text

    def rule(self) -> tuple[list[str], list[Path]]:
        args = ["apply", str(self.model), "-o", str(self.out), "-q", *SAMPLES]
        for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
            args += ["--rule", self._rule_text()]
        return args, [self.model]

    def _toml_value(self) -> str:
        rng = self.rng
        kind = rng.randrange(9)
        if kind == 0:
            return rng.choice(["true", "false"])
        if kind == 1:
            return rng.choice(["nan", "inf", "-inf", "+nan", "1e400", "0.0", "-0.0"])
        if kind == 2:
            return str(rng.choice([0, 1, 2, 4, 6, 8, 32, 1024, 1025, -1, 2**63 - 1]))
        if kind == 3:
            return repr(rng.choice([0.05, 0.5, 0.75, 1.0, 1.5, 4.0, 5.0, 1e-9]))
        if kind == 4:
            return '"' + rng.choice(PARAM_VALUES + RULE_NAMES[:4] + SITES).replace("\\", "\\\\").replace('"', "") + '"'
        if kind == 5:
            return "[" + ", ".join(self._toml_value() for _ in range(rng.randrange(0, 3))) + "]"
        if kind == 6:
            return "{ x = 1 }"
        if kind == 7:
            return "[" + ", ".join('"' + rng.choice(SITES).replace('"', "") + '"' for _ in range(rng.randrange(0, 3))) + "]"
        return "1979-05-27"

    def _rule_file(self) -> str:
        rng = self.rng
        lines: list[str] = []
        for _ in range(rng.randrange(0, 4)):
            lines += ["[[rule]]"]
            name = rng.choice(RULE_NAMES[:5])
            if rng.random() < 0.9:
                lines.append(f'name = "{name}"')
            sane = rng.random() < 0.5  # half the entries keep to the rule's own keys and plausible values
            for _ in range(rng.randrange(0, 4 if not sane else 3)):
                if sane and VALID_PARAMS.get(name):
                    key = rng.choice(list(VALID_PARAMS[name]))
                    lines.append(f"{key} = {rng.choice(VALID_PARAMS[name][key])}")
                else:
                    lines.append(f"{rng.choice(PARAM_KEYS[:8]) or 'x'} = {self._toml_value()}")
        if rng.random() < 0.5:
            lines.append("[search]")
            if rng.random() < 0.4:
                lines.append(f"p = {self._toml_value()}")
            for name in rng.sample(["fuse-ibn", "dw-to-dense", "align-channels", "depth-multiplier", "bogus"],
                                   rng.randrange(0, 3)):
                lines.append(f"[search.{name}]")
                for _ in range(rng.randrange(0, 3)):
                    key = rng.choice(["sites", "modes", "ratios", "range", "scope", "p", "junk"])
                    lines.append(f"{key} = {self._toml_value()}")
        if rng.random() < 0.2:
            lines.append(f"[{rng.choice(['serach', 'rules', 'x', 'rule.y'])}]\nk = {self._toml_value()}")
        text = "\n".join(lines) + "\n"
        if rng.random() < 0.1:
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(JUNK + ["[[", "]]", "= ="]) + text[at:]
        return text

    def rulefile(self) -> tuple[list[str], list[Path]]:
        path = self.root / "rules.toml"
        path.write_text(self._rule_file(), encoding="utf-8", errors="surrogateescape")
        if self.rng.random() < 0.25:
            args = ["optimize", str(self.model), "-t", "cpu", "--rules", str(path), "-o", str(self.out), "--report",
                    str(self.report), "--no-compare", "-q", *SAMPLES]
        else:
            args = ["apply", str(self.model), "-o", str(self.out), "--rules", str(path), "-q", *SAMPLES]
        return args, [self.model, path]

    def _array(self) -> np.ndarray:
        rng = self.rng
        count = rng.choice([0, 1, 2, 3, 8, 12])
        shape = (count, CHANNELS, SIZE, SIZE)
        roll = rng.random()
        if roll < 0.1:
            shape = tuple(rng.choice([1, 2, 4, 6]) for _ in range(rng.randrange(0, 6)))
        elif roll < 0.2:
            shape = (count, CHANNELS, SIZE, SIZE + 1)
        dtype = rng.choice(["float32"] * 4 + ["float64", "float16", "int8", "int64", "uint8", "bool", "complex64",
                                               "U3", "S2", "datetime64[s]"])
        values = np.random.default_rng(rng.randrange(2**32)).standard_normal(shape) * rng.choice([1, 1, 1e3, 1e30])
        if values.size and rng.random() < 0.5:
            flat = values.reshape(-1)
            for _ in range(rng.randrange(1, 4)):
                flat[rng.randrange(flat.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e39, -1e300])
        with np.errstate(all="ignore"):
            if dtype.startswith(("U", "S")):
                return values.astype(dtype)
            if dtype.startswith("datetime"):
                return np.zeros(shape, dtype=dtype)
            return values.astype(dtype)

    def calibration(self) -> tuple[list[str], list[Path]]:
        rng = self.rng
        path = self.root / rng.choice(["calib.npz", "calib.npz", "calib.npz", "calib.npy", "calib.bin"])
        roll = rng.random()
        if roll < 0.08:
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))))
        elif path.suffix == ".npy":
            with path.open("wb") as handle:  # np.save would append .npy to other names
                np.save(handle, self._array())
        else:
            arrays = {rng.choice(["x", "x", "x", "y", "X", ""]) or "x": self._array()}
            if rng.random() < 0.2:
                arrays["extra"] = self._array()
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            data = buffer.getvalue()
            if rng.random() < 0.08:
                data = data[: rng.randrange(len(data) + 1)]  # truncated archive
            path.write_bytes(data)
        rule = rng.choice(["dw-to-dense", "align-channels:p=6,mode=trim", "fuse-ibn", "depth-multiplier:p=4"])
        return ["apply", str(self.model), "-o", str(self.out), "--rule", rule, "--calibration", str(path), "-q",
                *SAMPLES], [self.model, path]


    def outputs(self) -> tuple[list[str], list[Path]]:
        """Output flags naming inputs (the model, its external data, the calibration file), each other,
        folders, places under a file, or fresh files."""
        rng = self.rng
        model = self.root / "ext.onnx"
        if not model.exists():
            onnx.save(tiny_model(channels=CHANNELS, size=SIZE), model, save_as_external_data=True,
                      location="ext.onnx.data", size_threshold=0)
            (self.root / "a_file").write_text("x")
            (self.root / "a_folder.md").mkdir()
            np.savez(self.root / "ext_calib.npz", x=np.zeros((4, CHANNELS, SIZE, SIZE), np.float32))
        inputs = [model, self.root / "ext.onnx.data", self.root / "ext_calib.npz"]
        choices = [str(p) for p in inputs] + [str(self.out), str(self.out), str(self.report), str(self.root),
                                              str(self.root / "a_folder.md"), str(self.root / "a_file" / "x.md"),
                                              str(self.root / "new" / "dir" / "r.md"),
                                              str(self.root / "sub" / ".." / "out.onnx")]
        flags = ["-o", rng.choice(choices)]
        command = "optimize" if rng.random() < 0.5 else "apply"
        if rng.random() < 0.7:
            flags += ["--report", rng.choice(choices)]
        if command == "optimize" and rng.random() < 0.5:
            flags += ["--save-rules", rng.choice(choices)]
        args = [command, str(model), *flags, "--calibration", str(inputs[2]), "-q", *SAMPLES]
        args += ["-t", "cpu", "--exact-only", "--no-compare"] if command == "optimize" else ["--rule", "dw-to-dense"]
        return args, inputs


def _check(runner: CliRunner, args: list[str], inputs: list[Path], outputs: list[Path]) -> int:
    for path in outputs:
        if path.is_file():
            path.unlink()
    before = [_digest(p) for p in inputs]
    result = runner.invoke(app, args)
    where = f"hwopt {' '.join(args)!r}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{where}: {type(result.exception).__name__}: {result.exception}")
    allowed = (0, 1, 2) if args[0] == "optimize" else (0, 2)
    assert result.exit_code in allowed, f"{where}: exit {result.exit_code}: {result.stderr[-500:]}"
    assert "Traceback" not in result.stdout + result.stderr, where
    if result.exit_code == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith("hwopt: error: ")]
        assert len(errors) == 1, f"{where}: {result.stderr[-500:]}"
    model_out = Path(args[args.index("-o") + 1]) if "-o" in args and args[0] in ("apply", "optimize") else None
    if model_out is not None and result.exit_code == 0 and not model_out.is_file():
        # optimize writes nothing when the original is the model to deploy (no rewrite worth its gain): said.
        assert args[0] == "optimize" and "nothing written" in result.stderr, f"{where}: exit 0 and no model"
    elif model_out is not None and result.exit_code == 0:
        assert _finite_model(model_out), f"{where}: wrote a model with a non-finite number"
    elif model_out is not None and model_out in outputs:
        assert not model_out.exists(), f"{where}: wrote {model_out} with exit {result.exit_code}"
    assert [_digest(p) for p in inputs] == before, f"{where}: changed an input file"
    return result.exit_code


@pytest.mark.slow  # hundreds of random command lines (24 s of CPU; 83 s on 2 cores at load 25)
def test_fuzz_the_command_line(tmp_path: Path) -> None:
    os.environ.pop("HWOPT_DEBUG", None)
    rng = random.Random(SEED)
    fuzzer = Fuzzer(tmp_path, rng)
    runner = CliRunner()
    families = [name for name, share in SHARES.items() for _ in range(round(share * CASES))]
    rng.shuffle(families)
    codes: dict[str, Counter] = {name: Counter() for name in SHARES}
    spent: Counter = Counter()
    start, cpu = time.perf_counter(), time.process_time()
    for family in families:
        args, inputs = getattr(fuzzer, family)()
        begin = time.perf_counter()
        written = [fuzzer.out, fuzzer.report, tmp_path / "new" / "dir" / "r.md"]
        codes[family][_check(runner, args, inputs, written)] += 1
        spent[f"{family}/{args[0]}"] += time.perf_counter() - begin
    seconds = time.perf_counter() - start
    print("\nseconds by family/command: " + ", ".join(f"{k} {v:.1f}" for k, v in spent.most_common()))
    total = sum(sum(c.values()) for c in codes.values())
    summary = "; ".join(f"{name}: {sum(c.values())} ({', '.join(f'exit {k}: {v}' for k, v in sorted(c.items()))})"
                        for name, c in codes.items())
    print(f"\nfuzz: {total} cases (seed {SEED}) in {seconds:.1f} s ({time.process_time() - cpu:.1f} s CPU); "
          f"{summary}")
    assert total >= min(CASES, 1000)
    # Not only refusals: each family also reaches the work itself.
    assert all(c[0] > 0 for c in codes.values()), summary
