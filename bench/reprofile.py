"""Re-measure the rows of a measurements table whose charge changed, keep every other row as it is.

After a backend change that moves only some kernels (npu32's pipelined charge
of repeated runs: depthwise convs, grouped convs and batched matmuls), the
rest of a table that took hours of SCALE-Sim stays valid. This re-measures
the rows of the given kinds on a target (``--kind``, default ``dwconv gconv
gemm``; ``--repeated-only``: of those only the kernels the array runs more than
once, i.e. a gemm of one product keeps its row) into a side table (resumable:
rerun the same command), then writes ``-o`` with those rows replaced in
place and the others untouched::

    nice -n 10 python -m bench.reprofile estimator/npu32/measurements.csv.gz -t npu32 -o new.csv.gz
    nice -n 10 python -m bench.reprofile new.csv.gz -t npu32-dw --kind dwconv -o npu32-dw.csv.gz

The second line is how ``estimator/npu32-dw`` got its table: the npu32 rows,
depthwise convs re-measured on the vector unit of the ``depthwise =
"vector"`` class (analytic: seconds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hwopt.backends import get_backend
from hwopt.backends.table_file import read_table, write_table
from hwopt.estimator.profile import profile
from hwopt.targets import load_target


def repeated(kernel) -> bool:
    """Whether the array runs this kernel's layer more than once (the rows the pipelined charge moved)."""
    from hwopt.backends.scalesim import layer_for

    return layer_for(kernel)[1] > 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("-t", "--target", required=True)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--kind", action="append", help="kinds to re-measure (repeatable)")
    parser.add_argument("--repeated-only", action="store_true",
                        help="only kernels whose layer runs more than once on the array")
    args = parser.parse_args(argv)
    kinds = tuple(args.kind or ("dwconv", "gconv", "gemm"))
    target = load_target(args.target)
    rows = read_table(args.table)
    redo = list(dict.fromkeys(m.kernel for m in rows if m.kernel.kind in kinds
                              and (not args.repeated_only or repeated(m.kernel))))
    side = Path(args.output).with_suffix("").with_suffix(".redo.csv.gz")
    start = time.perf_counter()
    result = profile(redo, get_backend(target), side,
                     lambda label, done, total: print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True))
    seconds = time.perf_counter() - start
    if result.failed:
        print(f"\n{len(result.failed)} kernels failed, e.g. {result.failed[0]}", file=sys.stderr)
        return 1
    new = {m.kernel: m for m in read_table(side)}
    merged = [new.get(m.kernel, m) if m.kernel.kind in kinds else m for m in rows]
    write_table(args.output, merged)
    moved = sum(1 for m in rows if m.kernel in new and abs(new[m.kernel].latency_us - m.latency_us) > 1e-9)
    print(f"\n{target.name}: {len(redo)} kernels re-measured ({result.measured} this run, {seconds:.0f} s), "
          f"{moved} changed; {len(merged)} rows in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
