"""hwopt's int8 TFLite writer against a TensorFlow-based converter (onnx2tf), both compiled by Vela.

    nice -n 10 env PYTHONPATH=. python -m bench.vela_crosscheck --tf-python /work/tfenv/bin/python
        [--model NAME ...] [-t TARGET ...] [--work build/vela_crosscheck] [--json OUT] [--layers]

The TensorFlow side lives in its own virtual environment (never hwopt's, and no test depends on it):

    python3.11 -m venv /work/tfenv && /work/tfenv/bin/pip install onnx2tf==1.29.24 sng4onnx

(onnx2tf 1.29.24 pins tensorflow 2.19.0, tf-keras 2.19.0, onnx 1.19.1, onnxruntime 1.23.0, onnxsim 0.4.36,
onnx-graphsurgeon 0.5.8, ai-edge-litert 2.1.0, psutil 5.9.5.) Each real export of ``tests/data`` is given
its input shape (the one ``bench/vela_measure.py`` uses), saved as one ONNX file, and converted twice:

- by hwopt's writer (``hwopt.tflite.writer.write_tflite``, the file ``hwopt measure`` hands Vela), and
- by ``onnx2tf -oiqt -qt per-channel -iqd int8 -oqd int8`` (its ``*_full_integer_quant.tflite``: int8
  per-channel weights, int8 activations and int8 I/O, as hwopt's), run with ``--tf-python``'s onnx2tf in
  a subprocess.

Both are calibrated on the same inputs: ``--calibration-count`` seeded standard-normal samples (hwopt's
own random calibration), given to onnx2tf as NHWC ``.npy`` through ``-cind NAME FILE MEAN STD`` with mean 0
and std 1. onnx2tf also runs a check inference on "sample images" it downloads for 3-channel inputs;
there is no network here, so the file it looks for in its working folder is written first, with seeded
random data (it only feeds that check, not the calibration).

Both files are compiled by Vela (``hwopt.backends.vela.compile_tflite``, the target's accelerator config,
system config and memory mode, ``--verbose-performance``) for each target, and the figures compared:
total cycles, NPU cycles, SRAM used, off-chip traffic, operators on the NPU / CPU and Transposes.
``--layers`` adds, for each pair more than 2% apart, Vela's cycles per original TFLite operator type on
both sides (where the difference sits).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from hwopt.backends.vela import VelaResult, VelaSettings, compile_tflite, vela_version
from hwopt.io.model import InputShape, apply_input_shapes, load_model
from hwopt.targets import load_target
from hwopt.tflite.quantize import random_samples
from hwopt.tflite.writer import write_tflite

TARGETS = ["ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256"]
DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
MODELS = {  # name -> input shape where the export leaves one dynamic (as bench/vela_measure.py)
    "torch_dynamo_mobilenet_v3_small_w025": None,
    "torch_dynamo_efficientnet_b0_w025": None,
    "torch_dynamo_lraspp_mobilenet_v3_large_w025": None,
    "ch_ppocr_mobile_v2.0_cls_infer": "x=1x3x48x192",
    "mediapipe_face_detection_short_range_tflite2onnx": None,
    "torch_unet_db_head_convtranspose": None,
}
# What onnx2tf reads from its working folder instead of downloading it (onnx2tf.utils.common_functions
# .download_test_image_data): 20 NHWC 128x128 RGB images for its check inference.
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
BAR = 2.0  # percent: the "Vela cycles within 2%"


@dataclasses.dataclass
class Pair:
    model: str
    target: str
    hwopt: VelaResult
    onnx2tf: VelaResult

    @property
    def difference(self) -> float:
        """hwopt's total cycles against onnx2tf's, in percent (negative: hwopt's file is faster)."""
        return (self.hwopt.cycles_total / self.onnx2tf.cycles_total - 1.0) * 100.0


def _samples(proto: onnx.ModelProto, count: int, seed: int) -> dict[str, np.ndarray]:
    """hwopt's own random calibration (``random_samples``: what ``write_tflite`` draws without samples),
    for fixed 1xCxHxW inputs only (onnx2tf's ``-cind`` wants NHWC images)."""
    samples = random_samples(proto, count, seed)
    for name, array in samples.items():
        if array.ndim != 4 or len(array) != count:
            raise SystemExit(f"{proto.graph.name}: input {name} is not 1xCxHxW; this bench feeds image inputs")
    return samples


def _scope_safe(proto: onnx.ModelProto) -> int:
    """Node names TensorFlow takes as name scopes (paddle2onnx writes ``Softmax@0``, which onnx2tf's
    Keras layer refuses); only names change, so both converters still read the same graph."""
    changed = 0
    for node in proto.graph.node:
        safe = re.sub(r"[^A-Za-z0-9_./>-]", "_", node.name)
        changed += safe != node.name
        node.name = safe
    return changed


def _onnx2tf(tf_python: Path, onnx_path: Path, samples: dict[str, np.ndarray], folder: Path) -> Path:
    """onnx2tf's full-integer int8 TFLite of ``onnx_path`` (converted in ``folder``, reused when there)."""
    folder, onnx_path = folder.resolve(), onnx_path.resolve()  # onnx2tf runs in ``folder``
    out = folder / "onnx2tf"
    result = out / f"{onnx_path.stem}_full_integer_quant.tflite"
    if result.is_file():
        return result
    folder.mkdir(parents=True, exist_ok=True)
    sample_file = folder / ONNX2TF_SAMPLE_FILE
    if not sample_file.is_file():
        np.save(sample_file, np.random.default_rng(1).random((20, 128, 128, 3), dtype=np.float32))
    command = [str(tf_python), "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(out), "-oiqt",
               "-qt", "per-channel", "-iqd", "int8", "-oqd", "int8"]
    for name, array in samples.items():
        path = folder / f"calibration_{len(command)}.npy"
        np.save(path, array.transpose(0, 2, 3, 1))  # onnx2tf calibrates on NHWC
        channels = array.shape[1]
        command += ["-cind", name, str(path), str([[[[0.0] * channels]]]), str([[[[1.0] * channels]]])]
    # onnx2tf starts onnxsim as a program: its venv's bin first on PATH.
    env = {**os.environ, "PATH": f"{tf_python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    with open(folder / "onnx2tf.log", "w") as log:
        done = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not result.is_file():
        raise SystemExit(f"onnx2tf failed on {onnx_path.name} (exit {done.returncode}); see {folder / 'onnx2tf.log'}")
    print(f"  onnx2tf: {onnx_path.name} converted in {time.perf_counter() - start:.0f} s", flush=True)
    return result


def _tf_versions(tf_python: Path) -> str:
    code = ("from importlib.metadata import version as v; print(', '.join(f'{p} {v(p)}' for p in "
            "['onnx2tf', 'tensorflow', 'tf-keras', 'onnx', 'onnxruntime', 'onnxsim', 'onnx-graphsurgeon', "
            "'sng4onnx', 'psutil']))")
    done = subprocess.run([str(tf_python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def _ops(result: VelaResult) -> str:
    transposes = sum(1 for layer in result.layers if layer.operator == "Transpose")
    return f"{result.npu_operators}/{result.cpu_operators}/{transposes}"


def _by_operator(result: VelaResult) -> dict[str, tuple[int, float]]:
    """Vela's layers and cycles per original TFLite operator type."""
    count: collections.Counter = collections.Counter()
    cycles: dict[str, float] = collections.defaultdict(float)
    for layer in result.layers:
        count[layer.operator] += 1
        cycles[layer.operator] += layer.cycles
    return {op: (count[op], cycles[op]) for op in count}


def _print_layers(pair: Pair) -> None:
    a, b = _by_operator(pair.hwopt), _by_operator(pair.onnx2tf)
    print(f"    {pair.model} on {pair.target}: layers and cycles per TFLite operator (hwopt | onnx2tf)")
    for op in sorted(set(a) | set(b), key=lambda o: -abs(a.get(o, (0, 0))[1] - b.get(o, (0, 0))[1])):
        (na, ca), (nb, cb) = a.get(op, (0, 0.0)), b.get(op, (0, 0.0))
        print(f"      {op:<22} {na:>4} {ca:>10.0f} | {nb:>4} {cb:>10.0f}   {ca - cb:>+10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf-python", type=Path, required=True, help="the Python of a venv with onnx2tf")
    parser.add_argument("--model", action="append", choices=list(MODELS), help="default: all six")
    parser.add_argument("-t", "--target", action="append", choices=TARGETS, help="default: all four")
    parser.add_argument("--work", type=Path, default=Path("build/vela_crosscheck"))
    parser.add_argument("--calibration-count", type=int, default=8)
    parser.add_argument("--fresh", action="store_true", help="convert again with onnx2tf (default: reuse)")
    parser.add_argument("--layers", action="store_true", help="cycles per operator type where > 2%% apart")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if not args.tf_python.is_file():
        raise SystemExit(f"--tf-python {args.tf_python}: no such file")
    print(f"Vela {vela_version()}; TF side: {_tf_versions(args.tf_python)}", flush=True)
    pairs: list[Pair] = []
    for name in args.model or list(MODELS):
        folder = args.work / name
        if args.fresh and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        proto = load_model(DATA / f"{name}.onnx")
        if MODELS[name]:
            apply_input_shapes(proto, [InputShape.parse(MODELS[name])])
        _scope_safe(proto)
        onnx_path = folder / f"{name}.onnx"  # both converters read this one file (shape fixed, data inline)
        onnx.save(proto, onnx_path)
        samples = _samples(proto, args.calibration_count, seed=0)
        written = write_tflite(proto, folder / "hwopt.tflite", samples=samples)
        converted = _onnx2tf(args.tf_python, onnx_path, samples, folder)
        for target_name in args.target or TARGETS:
            settings = VelaSettings.from_target(load_target(target_name))
            pair = Pair(name, target_name, compile_tflite(written.path, settings, name="hwopt"),
                        compile_tflite(converted, settings, name="onnx2tf"))
            pairs.append(pair)
            h, o = pair.hwopt, pair.onnx2tf
            print(f"{name:<50} {target_name:<14} cycles {h.cycles_total:>9.0f} {o.cycles_total:>9.0f} "
                  f"{pair.difference:>+7.2f}%  npu {h.cycles_npu:>9.0f} {o.cycles_npu:>9.0f}  "
                  f"SRAM KiB {h.sram_used_bytes / 1024:>6.1f} {o.sram_used_bytes / 1024:>6.1f}  "
                  f"off-chip KiB {h.offchip_traffic_bytes / 1024:>7.1f} {o.offchip_traffic_bytes / 1024:>7.1f}  "
                  f"ops npu/cpu/transpose {_ops(h)} {_ops(o)}", flush=True)
            if args.layers and abs(pair.difference) > BAR:
                _print_layers(pair)
    within = sum(1 for p in pairs if abs(p.difference) <= BAR)
    print(f"\nwithin {BAR:g}%: {within} of {len(pairs)}\n")
    print("| model | target | hwopt cycles | onnx2tf cycles | difference | NPU cycles hwopt / onnx2tf | "
          "SRAM KiB hwopt / onnx2tf | off-chip KiB/inference hwopt / onnx2tf | NPU/CPU ops, Transposes hwopt ; onnx2tf |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in pairs:
        h, o = p.hwopt, p.onnx2tf
        print(f"| {p.model} | {p.target} | {h.cycles_total:.0f} | {o.cycles_total:.0f} | {p.difference:+.1f}% | "
              f"{h.cycles_npu:.0f} / {o.cycles_npu:.0f} | {h.sram_used_bytes / 1024:.1f} / "
              f"{o.sram_used_bytes / 1024:.1f} | {h.offchip_traffic_bytes / 1024:.1f} / "
              f"{o.offchip_traffic_bytes / 1024:.1f} | {_ops(h)} ; {_ops(o)} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([{"model": p.model, "target": p.target, "difference_pct": p.difference,
                                          "hwopt": p.hwopt.to_meta(), "onnx2tf": p.onnx2tf.to_meta()}
                                         for p in pairs], indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
