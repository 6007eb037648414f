"""Write the example models to disk.

    python -m examples.build --out DIR [NAME ...] [--seed S]

writes DIR/NAME.onnx for each named model (all of `examples.zoo.MODELS` by
default) and prints one line per model: name, nodes, parameters, file size
and build seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from examples.zoo import MODELS


def count_params(model: onnx.ModelProto) -> int:
    """Weights held in initializers and in Constant nodes."""
    dims = [list(t.dims) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            dims += [list(a.t.dims) for a in node.attribute if a.name == "value"]
    return int(sum(np.prod(d, dtype=np.int64) for d in dims))


def _write_if_changed(data: bytes, path: Path) -> None:
    """Atomic write with the umask's permissions, like every file hwopt writes (``mkstemp`` alone made it
    0600); an identical existing file is left alone (mtime kept)."""
    from hwopt.io.atomic import atomic_write

    if path.exists() and path.read_bytes() == data:
        return
    atomic_write(path, lambda handle: handle.write(data))


def build_example(name: str, out_dir: Path, seed: int = 0) -> Path:
    """Build model `name` with `seed` and write it to ``out_dir/name.onnx``.

    Building is cheap (a few seconds), so it always builds; the file is only
    rewritten when its bytes change.
    """
    if name not in MODELS:
        raise KeyError(f"unknown example {name!r}; known: {', '.join(MODELS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    _write_if_changed(MODELS[name](seed).SerializeToString(), path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.build", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"models to build (default: all of {', '.join(MODELS)})"
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(MODELS)}")
    for name in args.names or list(MODELS):
        start = time.perf_counter()
        path = build_example(name, args.out, args.seed)
        seconds = time.perf_counter() - start
        model = onnx.load(path)
        print(
            f"{name:22s} nodes={len(model.graph.node):5d} params={count_params(model):10,d} "
            f"size={path.stat().st_size / 1e6:7.2f} MB  {seconds:5.2f} s  -> {path}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
