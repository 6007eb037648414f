"""Real exports on the cpu target: layout conversions predicted vs run, and the estimate vs the measurement.

    python -m bench.real_exports MODEL.onnx [MODEL.onnx ...] [--target cpu] [--no-measure]

For each model (canonical form, as hwopt estimates and writes it) it prints:

- the NCHWc layout conversions ``hwopt.analysis.layout`` predicts beside the ones
  onnxruntime really runs (its profiler, as ``hwopt measure`` reads them), with
  their bytes (the profiler's are the blocked, channel-padded side of a ReorderInput);
- the estimate (``hwopt estimate``) beside the end-to-end measurement
  (``hwopt measure``), unless ``--no-measure``. Timings are the host's: run it
  with nothing else on the machine, and compare runs by a reference model.

The models are not in the repository (tens of MB, and exported by the user's
own toolchain). How the ones in the cpu card were made, with random weights
and no downloads, batch 1, 224x224:

- torch 2.14 / torchvision 0.29: ``torch.onnx.export(model, x, path)`` for
  mobilenet_v2, mobilenet_v3_small/large, efficientnet_b0, resnet18/152,
  deeplabv3 and lraspp (mobilenet_v3_large), dynamo and ``dynamo=False`` (legacy);
- paddlepaddle 3.3.1 + paddle2onnx 2.1: ``paddle.vision.models.<name>()``,
  ``paddle.jit.save`` with an ``InputSpec([1, 3, 224, 224])``, then
  ``paddle2onnx.export(model_filename=inference.json, params_filename=
  inference.pdiparams, opset_version=13)``: mobilenet_v2, mobilenet_v3_small/
  large, shufflenet_v2_x1_0;
- tensorflow-cpu 2.21 + tf2onnx 1.17: ``tf.keras.applications.<Name>(weights=None)``
  and ``tf2onnx.convert.from_keras(model, input_signature=[TensorSpec([1, 224,
  224, 3])], opset=13)``: MobileNetV2, MobileNetV3Small, EfficientNetB0;
- MediaPipe's face and hand detectors through tflite2onnx 0.4.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hwopt.backends import model_measurer
from hwopt.backends.ort_cpu import TimingSettings, model_conversions
from hwopt.canonical.canonicalize import canonicalize
from hwopt.errors import HwoptError
from hwopt.estimator import load_estimator
from hwopt.analysis.layout import reorder_bytes
from hwopt.io.model import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--no-measure", action="store_true")
    args = parser.parse_args()
    estimator = load_estimator(args.target)
    target = estimator.target
    exact = loaded = 0
    for path in args.models:
        try:
            canonical, _ = canonicalize(load_model(path), verify=False)
        except HwoptError as exc:
            print(f"{path.name}: not loaded: {exc}")
            continue
        loaded += 1
        sched = estimator.schedule_of(canonical)
        predicted = [reorder_bytes(sk.kernel) for sk in sched.kernels]
        count, size = sum(c for c, _ in predicted), sum(b for _, b in predicted)
        line = f"{path.name:36s}"
        if target.fusion.blocked_layout:
            run = model_conversions(canonical, TimingSettings.from_target(target))
            run_count, run_size = run.count, run.bytes
            exact += count == run_count
            line += (f" conversions predicted {count:3d} ({size / 1e6:6.2f} MB), onnxruntime {run_count:3d} "
                     f"({run_size / 1e6:6.2f} MB){'' if count == run_count else '  MISMATCH'}")
        estimate = estimator.estimate(sched).latency_us
        line += f"  estimate {estimate / 1000:8.3f} ms"
        if not args.no_measure:
            measured = model_measurer(target)(canonical, target).latency_us
            line += f"  measured {measured / 1000:8.3f} ms ({estimate / measured - 1:+.1%})"
        print(line, flush=True)
    if target.fusion.blocked_layout:
        print(f"conversions named exactly on {exact} of {loaded} models")


if __name__ == "__main__":
    main()
