"""Small models of the training families for the cpu in-model term: reduced width and input size.

The examples are all full-width at 224-320 px: their kernels take tens of
microseconds. Real exports are often far smaller (a width-0.25 backbone at
64x64 runs 80 nodes in ~80 us); there a node inside a model costs well under
what an isolated session's kernel does, and the in-model term needs models in
that regime to learn it. These are MobileNetV2 and MobileNetV3-Small (the
examples' structure and names, ``examples.zoo``'s tables) at width
multipliers 0.25-1.0 and input sizes 64-160; none is a model of the held-out
real-export corpus (``bench/interval_coverage.py``), and none has its widths
and input size (the corpus' MobileNetV3-Small is width 0.25 at 64x64).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx

from examples.builder import GraphBuilder, Habits
from examples.zoo import MOBILENETV2_TABLE, MOBILENETV3_SMALL_TABLE, _make_divisible

# (family, width multiplier, input side)
SMALL = (("mobilenetv2", 0.25, 64), ("mobilenetv2", 0.35, 96), ("mobilenetv2", 0.5, 128),
         ("mobilenetv2", 0.75, 160), ("mobilenetv3_small", 0.5, 96), ("mobilenetv3_small", 0.75, 128),
         ("mobilenetv3_small", 1.0, 64),
         # text-line shapes (wide, low): onnxruntime's blocked convs cost more per output pixel on 2-12 rows
         ("mobilenetv2", 0.5, (48, 192)), ("mobilenetv2", 0.35, (32, 320)), ("mobilenetv3_small", 1.0, (32, 256)))


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def mobilenetv2(width: float, size: int | tuple[int, int], seed: int = 0) -> onnx.ModelProto:
    h, w = _hw(size)
    b = GraphBuilder(f"mobilenetv2_w{width}_{h}x{w}", 13, seed, Habits(relu6_style="clip_inputs"))
    x = b.input("input", 3, h, w)
    with b.scope("features"):
        y = b.conv_bn_act(x, _make_divisible(32 * width), 3, 2, act="relu6", module="0")
        idx = 1
        for t, c, n, s in MOBILENETV2_TABLE:
            for i in range(n):
                y = b.inverted_bottleneck(y, _make_divisible(c * width), 3, s if i == 0 else 1, expand=t,
                                          act="relu6", module=str(idx))
                idx += 1
        y = b.conv_bn_act(y, 1280, 1, act="relu6", module="18")
    y = b.flatten(b.global_avg_pool(y))
    b.output(b.linear(y, 10, module="classifier.1"), "output")
    return b.build(f"MobileNetV2 x{width} at {h}x{w} (random weights)")


def mobilenetv3_small(width: float, size: int | tuple[int, int], seed: int = 0) -> onnx.ModelProto:
    h, w = _hw(size)
    b = GraphBuilder(f"mobilenetv3_small_w{width}_{h}x{w}", 17, seed, Habits())
    x = b.input("input", 3, h, w)
    with b.scope("features"):
        y = b.conv_bn_act(x, _make_divisible(16 * width), 3, 2, act="hardswish", module="0")
        for i, (k, hidden, c, se, act, s) in enumerate(MOBILENETV3_SMALL_TABLE):
            hidden = _make_divisible(hidden * width)
            squeeze = _make_divisible(hidden // 4) if se else None
            y = b.inverted_bottleneck(y, _make_divisible(c * width), k, s, hidden=hidden, act=act,
                                      se_squeeze=squeeze, layout="v3", module=f"{i + 1}")
        y = b.conv_bn_act(y, _make_divisible(576 * width), 1, act="hardswish", module="12")
    y = b.flatten(b.global_avg_pool(y, module="avgpool"))
    b.output(b.linear(y, 10, module="classifier.3"), "output")
    return b.build(f"MobileNetV3-Small x{width} at {h}x{w} (random weights)")


BUILDERS = {"mobilenetv2": mobilenetv2, "mobilenetv3_small": mobilenetv3_small}


def small_models(folder: Path) -> dict[str, Path]:
    """Every SMALL model, built into ``folder`` (rewritten only when missing); labels ``family~wW_S``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for family, width, size in SMALL:
        h, w = _hw(size)
        label = f"{family}~w{width}_{size}" if isinstance(size, int) else f"{family}~w{width}_{h}x{w}"
        path = folder / f"{label}.onnx"
        if not path.exists():
            onnx.save(BUILDERS[family](width, size), str(path))
        out[label] = path
    return out


def main() -> None:
    """Measure the small models' kernels (the ones the sweep lacks) into a cpu table, in this process."""
    import argparse

    from hwopt.backends import get_backend
    from hwopt.canonical.canonicalize import load_canonical
    from hwopt.analysis.kernels import schedule
    from hwopt.estimator.profile import profile, sweep
    from hwopt.targets import load_target

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("table", type=Path)
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("build/small_models"))
    args = parser.parse_args()
    target = load_target(args.target)
    swept = set(sweep(target.parallelism))
    kernels = []
    for path in small_models(args.work).values():
        kernels += [replace(sk.kernel, reorder_in=False, reorder_out=False)
                    for sk in schedule(load_canonical(path)[1], target.fusion).kernels if sk.kernel.kind != "view"]
    todo = [k for k in dict.fromkeys(kernels) if k not in swept]
    result = profile(todo, get_backend(target), args.table, label="small models' kernels")
    print(f"{result.measured} kernels of the small models measured, {result.skipped} already in {args.table}")


if __name__ == "__main__":
    main()
