"""The profiling sweep: which kernels to measure on a target, and measuring them resumably.

The estimator is only as good as the kernels it was trained on, so the sweep
samples configurations from the distribution of real models rather than a
grid: it takes every kernel of the example models (and of the user's
``--from`` models), adds what the rewrites produce (for every IBN block the
fused-IBN conv: a KxK standard conv from the block input to the hidden
channels at the depthwise stride; for every depthwise conv its dense
replacement, groups 1), then perturbs each seed kernel along one axis at a
time: channel counts aligned to P (multiples of P), misaligned (P*k +- 1,
odd counts) and half-aligned (P*k + P/2), expand ratios, kernel sizes 1/3/5/7, strides 1/2 and
resolutions 7..224. Everything is seeded and deduplicated by ``Kernel``;
categories are interleaved so any prefix (``--count N``) is a mix.

``profile`` appends the measurements to the output table batch by batch
(``BATCH`` kernels, each durable when appended: ``hwopt.backends.table_file``)
and skips kernels already there, so an interrupted sweep resumes where it
stopped. ``neighbours`` is the adaptive-refinement hook (nn-Meter style):
given the kernels the estimator predicts worst, it proposes nearby
configurations to measure next.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import onnx

from hwopt.backends.table_file import TableAppender
from hwopt.errors import HwoptError
from hwopt.analysis.kernels import schedule
from hwopt.analysis.kernel import CONV_KINDS, Kernel

RESOLUTIONS = (7, 14, 28, 56, 112, 224)
KERNEL_SIZES = (1, 3, 5, 7)
EXPAND_RATIOS = (2, 3, 4, 6)
# Keep every sweep kernel cheap enough to time many times: a single conv beyond
# these is far outside what mobile vision models run, and would take seconds each.
MAX_MACS = 2_000_000_000
MAX_ELEMENTS = 16_000_000

ProgressFn = Callable[[str, int, int], None]
# Kernels handed to the backend at once: the cpu backend times them in interleaved rounds (a host's slow
# spell spreads over the batch), and an interrupted sweep loses at most one batch (~15 s on cpu).
BATCH = 32


# ---------------------------------------------------------------- seed kernels

def _example_models() -> dict:
    """examples/zoo.py's MODELS: importable from the checkout even when hwopt runs as a console script."""
    try:
        from examples.zoo import MODELS
    except ImportError:
        from hwopt.targets import data_root

        # The examples live beside the package in the source checkout hwopt is installed from (-e).
        if not (data_root() / "examples" / "zoo.py").is_file():
            return {}
        sys.path.append(str(data_root()))
        from examples.zoo import MODELS
    return MODELS


def example_names() -> tuple[str, ...]:
    """The example model names (examples/zoo.py's MODELS), in the order of ``_example_canonicals``."""
    return tuple(_example_models())


@lru_cache(maxsize=1)
def _example_canonicals() -> tuple[onnx.ModelProto, ...]:
    """The example models, canonical (built in memory, seed 0); empty where examples/ is not installed."""
    from hwopt.canonical.canonicalize import canonicalize

    return tuple(canonicalize(build(0), verify=False)[0] for build in _example_models().values())


def model_kernels(canonical: onnx.ModelProto) -> tuple[list[Kernel], list[Kernel], list[Kernel]]:
    """A canonical model's (kernels, fused-IBN convs, dense replacements of its depthwise convs)."""
    from hwopt.analysis.blocks import find_ibn_blocks
    from hwopt.analysis.graph import import_graph

    graph = import_graph(canonical)
    sched = schedule(graph)
    kernels = [sk.kernel for sk in sched.kernels if sk.kernel.kind not in ("view", "unknown")]
    by_node = sched.by_node()
    fused = []
    for block in find_ibn_blocks(graph):
        if block.expand is None:
            continue  # nothing to fuse (MobileNetV2's first block)
        dw = sched.kernels[by_node[block.depthwise.name]].kernel
        expand = sched.kernels[by_node[block.expand.name]].kernel
        # fuse-ibn: KxK standard conv, block input -> hidden, at the depthwise stride, with the expand's act.
        fused.append(Kernel("conv", block.in_channels, block.hidden_channels, expand.h, expand.w, dw.out_h,
                            dw.out_w, dw.kernel, dw.kw, dw.stride, 1, expand.act, dtype_bytes=dw.dtype_bytes))
    dense = [replace(k, kind="conv", groups=1) for k in kernels if k.kind == "dwconv"]
    return kernels, fused, dense


# ---------------------------------------------------------------- perturbations

def _out(size: int, stride: int) -> int:
    return max(1, math.ceil(size / stride))


def with_channels(k: Kernel, cin: int, cout: int) -> Kernel | None:
    """``k`` with new channel counts (kept consistent with its kind), or None when impossible."""
    cin, cout = max(cin, 1), max(cout, 1)
    if k.kind == "dwconv":
        return replace(k, cin=cout, cout=cout, groups=cout)
    if k.kind == "gconv":
        g = k.groups
        cin, cout = max(g, cin // g * g), max(g, cout // g * g)
        return replace(k, cin=cin, cout=cout)
    if k.kind in ("conv", "gemm"):
        return replace(k, cin=cin, cout=cout)
    if k.kind == "concat":
        return replace(k, cin=max(cout, k.inputs), cout=max(cout, k.inputs))
    return replace(k, cin=cout, cout=cout)  # channel-preserving kinds


def with_resolution(k: Kernel, size: int) -> Kernel | None:
    """``k`` at input resolution ``size`` x ``size`` (output scaled as the kind does)."""
    if k.kind == "gemm" or (k.h == 1 and k.w == 1 and k.kind not in CONV_KINDS):
        return None  # not spatial
    if k.kind in CONV_KINDS or k.kind == "pool":
        return replace(k, h=size, w=size, out_h=_out(size, k.stride), out_w=_out(size, k.stride))
    if k.kind == "reduce":
        return replace(k, h=size, w=size, out_h=1 if k.out_h == 1 else size, out_w=1 if k.out_w == 1 else size)
    if k.kind == "resize":
        scale = k.out_h / max(k.h, 1)
        return replace(k, h=size, w=size, out_h=max(1, round(size * scale)), out_w=max(1, round(size * scale)))
    return replace(k, h=size, w=size, out_h=size, out_w=size)


def with_window(k: Kernel, kernel: int | None = None, stride: int | None = None) -> Kernel | None:
    if k.kind not in CONV_KINDS and k.kind != "pool":
        return None
    kernel = k.kernel if kernel is None else kernel
    stride = k.stride if stride is None else stride
    return replace(k, kernel=kernel, kw=kernel, stride=stride, out_h=_out(k.h, stride), out_w=_out(k.w, stride))


def aligned(c: int, p: int) -> int:
    return max(p, round(c / p) * p)


def misaligned(c: int, p: int, rng: np.random.Generator) -> int:
    """A count off the P grid: P*k +- 1 or an odd count near c."""
    base = aligned(c, p)
    options = [base + 1, base - 1, c | 1 if c % p == 0 else c, base + p // 2 + 1]
    return max(1, int(options[rng.integers(len(options))]))


def half_aligned(c: int, p: int) -> int:
    """A count halfway on the P grid (P*k + P/2: 28 or 36 for P = 8), as TFLite-era models use."""
    return aligned(c, p) + p // 2


def perturb(k: Kernel, p: int, rng: np.random.Generator) -> list[Kernel]:
    """Variants of ``k``, one axis at a time: aligned, misaligned and half-aligned channels, expand ratio,
    window, stride, size."""
    out: list[Kernel | None] = []
    keep_cin = k.cin if k.cin <= 4 else None  # the image input (3 channels) is what it is
    out.append(with_channels(k, keep_cin or aligned(k.cin, p), aligned(k.cout, p)))
    out.append(with_channels(k, keep_cin or misaligned(k.cin, p, rng), misaligned(k.cout, p, rng)))
    if k.kind in ("conv", "dwconv") and p % 2 == 0:
        # Even counts off the P grid: onnxruntime pads a multiple of 4 to its NCHWc block (fast) but runs an
        # odd count in plain NCHW (a depthwise conv 3.6x slower), so P*k +- 1 alone taught "off-grid is slow"
        # and a 28-channel depthwise conv was predicted 16x its time. (No random draw: the rest of the sweep
        # stays as it was.)
        out.append(with_channels(k, keep_cin or half_aligned(k.cin, p), half_aligned(k.cout, p)))
    if k.kind == "conv" and k.kernel == 1 and k.cout > k.cin:  # an expand conv: other expand ratios
        ratio = int(rng.choice(EXPAND_RATIOS))
        out.append(with_channels(k, k.cin, k.cin * ratio))
    if k.kind in CONV_KINDS:
        sizes = [s for s in KERNEL_SIZES if s != k.kernel and (s > 1 or k.kind == "conv")]
        out.append(with_window(k, kernel=int(rng.choice(sizes))))
        out.append(with_window(k, stride=2 if k.stride == 1 else 1))
    elif k.kind == "pool":
        out.append(with_window(k, stride=2 if k.stride == 1 else 1))
    sizes = [s for s in RESOLUTIONS if s != k.h]
    out.append(with_resolution(k, int(rng.choice(sizes))))
    return [v for v in out if v is not None and v != k and affordable(v)]


# Elementwise ops exporters leave standing alone: a Keras export's input scaling (Mul, Add by constants),
# an activation after a Concat or a Resize, ops a Transpose splits off their conv. The example models fuse
# all of theirs into convs, so the sweep adds them on the examples' own tensor shapes.
STANDALONE_OPS = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Mul", "Add", "Sub",
                  "Div")


def standalone_activations(seeds: Sequence[Kernel], sources: dict[Kernel, set[str]], rng: np.random.Generator,
                           ) -> tuple[list[Kernel], dict[Kernel, set[str]]]:
    """Standalone elementwise kernels: one op drawn per conv output shape of the seeds, and every op on each
    network input as given (3xHxW) and as a Keras export's NHWC input reads (H channels of WxC)."""
    by_shape: dict[tuple[int, int, int, int], set[str]] = {}
    inputs: dict[tuple[int, int, int, int], set[str]] = {}
    for k in seeds:
        if k.kind in ("conv", "dwconv", "gconv"):
            by_shape.setdefault((k.cout, k.out_h, k.out_w, k.dtype_bytes), set()).update(sources[k])
            if k.cin <= 4:  # a network's first conv reads the image
                for shape in ((k.cin, k.h, k.w, k.dtype_bytes), (k.h, k.w, k.cin, k.dtype_bytes)):
                    inputs.setdefault(shape, set()).update(sources[k])
    out: dict[Kernel, set[str]] = {}
    for (c, h, w, size), names in sorted(by_shape.items()):
        kernel = Kernel("act", c, c, h, w, h, w, op=str(rng.choice(STANDALONE_OPS)), dtype_bytes=size)
        out.setdefault(kernel, set()).update(names)
    for (c, h, w, size), names in sorted(inputs.items()):
        for op in STANDALONE_OPS:
            out.setdefault(Kernel("act", c, c, h, w, h, w, op=op, dtype_bytes=size), set()).update(names)
    kernels = [k for k in out if affordable(k)]
    return kernels, {k: out[k] for k in kernels}


# Transformer blocks at the sizes real vision exports run them: (model, tokens, width, heads, MLP ratio,
# MLP activation, windows). Tokens are the sequence one attention sees; windows are how many such
# sequences one sample holds (Swin's 7x7 windows, MobileViT's pixels per patch), each its own heads.
# PP-OCRv4's recogniser at its default 48x320 (40 tokens) is left out on purpose: bench/attention.py
# scores that export as shapes the table never saw (and at 48x640 as shapes it has).
ATTENTION_BLOCKS = (
    ("PP-OCRv4 rec SVTR neck, 48x480", 60, 120, 8, 2, "silu", 1),
    ("PP-OCRv4 rec SVTR neck, 48x640", 80, 120, 8, 2, "silu", 1),
    ("PP-OCRv3 rec SVTR neck, 48x320", 40, 64, 8, 2, "silu", 1),
    ("SVTR-T stage 1, 32x100", 200, 64, 2, 4, "gelu", 1),
    ("SVTR-T stage 2", 100, 128, 4, 4, "gelu", 1),
    ("SVTR-T stage 3", 50, 256, 8, 4, "gelu", 1),
    ("ViT-Ti/DeiT-tiny 224", 197, 192, 3, 4, "gelu", 1),
    ("DeiT-small 224", 197, 384, 6, 4, "gelu", 1),
    ("Swin-T stage 1, 7x7 windows", 49, 96, 3, 4, "gelu", 64),
    ("MobileViT-XS stage 3, 2x2 patches", 256, 96, 4, 2, "silu", 4),
    ("EfficientFormer-L1 last stage", 49, 448, 8, 4, "gelu", 1),
    ("LeViT-128S-class stage 1", 196, 128, 4, 2, "hardswish", 1),
)


# A recogniser's CTC head: (tokens, width, classes), a gemm to the character set and a softmax over it.
CTC_HEADS = ((60, 120, 6625), (80, 120, 6625), (40, 64, 6625), (25, 256, 97), (50, 256, 37))
# How an activation an exporter leaves after the MLP's Reshape is scheduled (not fused: the Reshape between).
_MLP_ACT = {"silu": (("act", "Sigmoid"), ("eltwise", "Mul")), "gelu": (("act", "Gelu"),),
            "hardswish": (("act", "HardSwish"),)}


def attention_kernels(blocks: Sequence[tuple] = ATTENTION_BLOCKS, heads: Sequence[tuple] = CTC_HEADS) -> list[Kernel]:
    """The kernels of one transformer block per entry, as ``hwopt.analysis.kernels.schedule`` describes an export
    after onnxruntime's basic optimisation (MatMul + bias as a Gemm over the tokens, the MLP's activation
    standing alone after its Reshape): the pre-norm, the QKV projection, each head's Q @ K^T, the softmax
    over keys, each head's P @ V, the output projection, the residual Add, the MLP's two gemms and its
    activation, the head split/merge Transpose; then the CTC heads' gemm and softmax."""
    out: list[Kernel] = []
    for _, tokens, width, n_heads, ratio, act, windows in blocks:
        rows = tokens * windows
        head = width // n_heads
        groups = n_heads * windows
        hidden = width * ratio
        out += [
            Kernel("norm", width, width, rows, 1, rows, 1, op="LayerNormalization"),
            Kernel("gemm", width, 3 * width, batch=rows, op="Gemm"),
            Kernel("gemm", head, tokens, groups=groups, inputs=2, batch=groups * tokens, op="MatMul"),
            Kernel("softmax", tokens, tokens, groups * tokens, 1, groups * tokens, 1, op="Softmax"),
            Kernel("gemm", tokens, head, groups=groups, inputs=2, batch=groups * tokens, op="MatMul"),
            Kernel("gemm", width, width, batch=rows, op="Gemm"),
            Kernel("eltwise", rows * width, rows * width, inputs=2, op="Add"),
            Kernel("gemm", width, hidden, batch=rows, op="Gemm"),
            Kernel("gemm", hidden, width, batch=rows, op="Gemm"),
            Kernel("layout", rows * width, rows * width, op="Transpose"),
        ]
        for kind, op in _MLP_ACT[act]:
            out.append(Kernel(kind, rows * hidden, rows * hidden, inputs=2 if kind == "eltwise" else 1, op=op))
    for tokens, width, classes in heads:
        out += [Kernel("gemm", width, classes, batch=tokens, op="Gemm"),
                Kernel("softmax", classes, classes, tokens, 1, tokens, 1, op="Softmax")]
    return [k for k in _dedupe(out) if affordable(k)]


def affordable(k: Kernel) -> bool:
    """Cheap enough to time repeatedly (see MAX_MACS / MAX_ELEMENTS)."""
    return k.macs <= MAX_MACS and max(k.in_elements, k.out_elements) <= MAX_ELEMENTS


# ---------------------------------------------------------------- the sweep

def _interleave(groups: Sequence[Sequence[Kernel]]) -> list[Kernel]:
    """Round-robin over groups, deduplicated, so any prefix holds every category."""
    seen: set[Kernel] = set()
    out = []
    for index in range(max((len(g) for g in groups), default=0)):
        for group in groups:
            if index < len(group) and group[index] not in seen:
                seen.add(group[index])
                out.append(group[index])
    return out


def _dedupe(kernels: Iterable[Kernel]) -> list[Kernel]:
    return list(dict.fromkeys(kernels))


def sweep(parallelism: int, models: Sequence[onnx.ModelProto] = (), *, examples: bool = True, count: int | None = None,
          seed: int = 0, families: Sequence[str] | None = None,
          origins: dict[Kernel, set[str]] | None = None, attention: bool | None = None) -> list[Kernel]:
    """The kernels to measure for a target of parallelism P (deterministic for a seed).

    ``families``: seed only from these example models (default: all). ``attention``: add the
    transformer blocks' kernels (``attention_kernels``, origin "attention"; default: with the examples,
    as the shipped targets' sweeps are). ``origins``: filled with
    kernel -> the models it derives from (its seed kernel's models; user models are ``model<i>``), so
    an evaluation can hold out whole model families from a table measured over all of them.
    """
    names = example_names() if examples else ()
    canonicals = list(_example_canonicals() if examples else ())
    if families is not None:
        unknown = sorted(set(families) - set(names))
        if unknown:
            raise HwoptError(f"no example model {unknown[0]!r} (examples: {', '.join(names)})")
        canonicals = [m for n, m in zip(names, canonicals) if n in families]
        names = tuple(n for n in names if n in families)
    names = tuple(names) + tuple(f"model{i}" for i in range(len(models)))
    canonicals += list(models)
    if not canonicals:
        raise HwoptError("nothing to sample kernels from: give --from MODEL.onnx (the examples are not installed)")
    seeds, fused, dense = [], [], []
    source: dict[Kernel, set[str]] = {}
    for name, model in zip(names, canonicals):
        kernels, f, d = model_kernels(model)
        for k in kernels + f + d:
            source.setdefault(k, set()).add(name)
        seeds += kernels
        fused += f
        dense += d
    seeds, fused, dense = _dedupe(seeds), _dedupe(fused), _dedupe(dense)
    rng = np.random.default_rng(seed)
    aligned_v, misaligned_v, other_v = [], [], []
    for k in seeds + fused + dense:
        variants = perturb(k, parallelism, rng)
        for v in variants:
            source.setdefault(v, set()).update(source[k])
        for v in variants:
            if v.cout % parallelism == 0 and v.cout != k.cout:
                aligned_v.append(v)
            elif v.cout % parallelism and v.cout != k.cout:
                misaligned_v.append(v)
            else:
                other_v.append(v)
    # Shuffle each perturbation group (seeded) so a capped sweep is not biased to the first model.
    groups = [seeds, [k for k in fused if affordable(k)], [k for k in dense if affordable(k)]]
    for group in (aligned_v, misaligned_v, other_v):
        order = rng.permutation(len(group))
        groups.append([group[i] for i in order])
    # Its own generator: the draws above stay what they were before this group existed.
    standalone, standalone_sources = standalone_activations(seeds, source, np.random.default_rng([seed, 1]))
    groups.append(standalone)
    for k, names in standalone_sources.items():
        source.setdefault(k, set()).update(names)
    if examples if attention is None else attention:
        # No example model has attention: its kernels come from real transformer shapes (ATTENTION_BLOCKS).
        blocks = attention_kernels()
        groups.append(blocks)
        for k in blocks:
            source.setdefault(k, set()).add("attention")
    kernels = _interleave(groups)
    if origins is not None:
        origins.update({k: source[k] for k in kernels})
    return kernels[:count] if count is not None else kernels


def neighbours(kernels: Sequence[Kernel], parallelism: int, *, per_kernel: int = 6, seed: int = 0,
               exclude: Iterable[Kernel] = ()) -> list[Kernel]:
    """Adaptive refinement: configurations next to the worst-predicted kernels, to measure next.

    For each kernel, in order: output channels one P-step up and down, one
    channel off the P grid either side, input channels one P-step up, and the
    resolution doubled and halved (kind-consistent, affordable, not in
    ``exclude``, deduplicated); at most ``per_kernel`` each. Deterministic.
    """
    skip = set(exclude)
    found: list[Kernel] = []
    p = parallelism
    for k in kernels:
        candidates = [with_channels(k, k.cin, k.cout + p), with_channels(k, k.cin, k.cout - p),
                      with_channels(k, k.cin, k.cout + 1), with_channels(k, k.cin, k.cout - 1),
                      with_channels(k, k.cin + p, k.cout) if k.cin > 4 else None]
        if k.h > 1:
            candidates += [with_resolution(k, min(k.h * 2, 448)), with_resolution(k, max(k.h // 2, 1))]
        taken = 0
        for c in candidates:
            if c is None or c == k or c in skip or not affordable(c) or c.cout < 1:
                continue
            skip.add(c)
            found.append(c)
            taken += 1
            if taken >= per_kernel:
                break
    return found


# ---------------------------------------------------------------- measuring

@dataclass
class ProfileResult:
    output: Path
    measured: int  # new rows this run
    skipped: int  # already in the table
    total: int  # rows in the table now
    failed: list[tuple[Kernel, str]] = field(default_factory=list)  # the backend cannot measure these (reported)


def measure_batch(backend, batch: Sequence[Kernel]) -> tuple[list, list[tuple[Kernel, str]]]:
    """(measurements, kernels the backend refuses with why): a refused kernel does not cost its batch."""
    try:
        return backend.measure(batch), []
    except HwoptError:
        measured, failed = [], []
        for kernel in batch:  # find the kernel(s) the backend refuses, measure the rest
            try:
                measured += backend.measure([kernel])
            except HwoptError as exc:
                failed.append((kernel, str(exc)))
        return measured, failed


_WORKER_BACKENDS: dict[str, object] = {}


def measure_on_worker(target, batch: Sequence[Kernel], options: dict | None = None,
                      one_cpu: bool = False) -> tuple[list, list]:
    """An executor task: one batch measured with ``target``'s backend, built once per worker process.

    ``one_cpu``: the executor runs a task per CPU, so the backend's own parallelism (where it has one) is
    set to 1. The emulator environment is made on the node the first time it is needed (under the
    environment's lock: two tasks on one node never build it at once).
    """
    from hwopt.backends import get_backend

    key = repr((target, sorted((options or {}).items()), one_cpu))
    backend = _WORKER_BACKENDS.get(key)
    if backend is None:
        backend = get_backend(target, **(options or {}))
        if one_cpu and hasattr(backend, "workers"):
            backend.workers = 1
        _WORKER_BACKENDS[key] = backend
    return measure_batch(backend, batch)


def largest_first(kernels: Sequence[Kernel], target) -> list[Kernel]:
    """The kernels by decreasing measuring work (the backend's own figure where it has one, else MACs),
    so a sweep stopped early has covered the extremes the estimator would otherwise extrapolate to."""
    from hwopt.backends import work_estimate

    work = work_estimate(target)
    return sorted(kernels, key=lambda k: (-work(k), -k.macs))


def coarse_to_fine(kernels: Sequence[Kernel], target) -> list[Kernel]:
    """Largest first, then the size range halved and halved again (ranks 0, n/2, n/4, 3n/4, n/8, ...
    of the largest-first order): the extremes come first and any prefix spans the whole range, where a
    strict largest-first order on a slow machine spends hours on the top few kernels alone."""
    ordered = largest_first(kernels, target)
    n, picked, seen = len(ordered), [], set()
    size = 1 << max(n - 1, 0).bit_length()
    for i in range(size):
        reversed_bits = int(format(i, f"0{size.bit_length() - 1}b")[::-1], 2) if size > 1 else 0
        rank = reversed_bits * n // size
        if rank not in seen:
            seen.add(rank)
            picked.append(ordered[rank])
    return picked + [k for rank, k in enumerate(ordered) if rank not in seen]


ORDERS = {"sweep": lambda kernels, target: list(kernels), "largest-first": largest_first,
          "coarse-to-fine": coarse_to_fine}


def _record(results: Iterable[tuple[list, list]], todo: int, table: TableAppender, progress: ProgressFn | None,
            label: str) -> list[tuple[Kernel, str]]:
    """The single writer: append each finished batch durably as it arrives, each kernel once."""
    failed, finished = [], 0
    if progress is not None:
        progress(label, 0, todo)
    for measured, refused in results:
        # One batch per append: an interruption loses at most the batches still running. A batch run
        # twice (a retried task whose first run finished after all) never doubles a row.
        table.append([m for m in measured if m.kernel not in table.done])
        failed += refused
        finished += len(measured) + len(refused)
        if progress is not None:
            progress(label, finished, todo)
    return failed


def _measure(kernels: Sequence[Kernel], output: str | Path, run_batches) -> ProfileResult:
    """Open the table, hand the kernels it lacks to ``run_batches(todo, table)``, and sum up."""
    output = Path(output)
    with TableAppender(output) as table:
        before = table.rows
        todo = [k for k in _dedupe(kernels) if k not in table.done]
        failed = run_batches(todo, table)
        new = table.rows - before
        if new and output.suffix == ".gz":
            table.compact()  # one gzip member instead of one per batch (~6x smaller)
        total = table.rows
    return ProfileResult(output, new, len(_dedupe(kernels)) - len(todo), total, failed)


def profile(kernels: Sequence[Kernel], backend, output: str | Path, progress: ProgressFn | None = None,
            label: str = "profiling") -> ProfileResult:
    """Measure the kernels not yet in ``output`` with ``backend`` in this process, appending each batch of
    ``BATCH`` durably as it is taken (resumable).

    The table is crash-safe (``hwopt.backends.table_file``): a kill or a full disk loses at most the
    batch being timed, and the resume drops a torn last row with a warning. A kernel the backend refuses
    (HwoptError: e.g. an op it has no model for) does not stop a long sweep: it is listed in the result's
    ``failed`` for the caller to report.
    """
    def run(todo: list[Kernel], table: TableAppender) -> list[tuple[Kernel, str]]:
        batches = (measure_batch(backend, todo[i:i + BATCH]) for i in range(0, len(todo), BATCH))
        return _record(batches, len(todo), table, progress, label)

    return _measure(kernels, output, run)


def batch_size(todo: int, slots: int) -> int:
    """Kernels per task: about four tasks per slot (a slot freed early finds work), at most BATCH."""
    return max(1, min(BATCH, math.ceil(todo / (4 * slots))))


def profile_with(executor, target, kernels: Sequence[Kernel], output: str | Path,
                 progress: ProgressFn | None = None, label: str = "profiling", batch: int | None = None,
                 backend_options: dict | None = None) -> ProfileResult:
    """``profile`` through an executor: batches of kernels measured as tasks (``measure_on_worker``) in
    the executor's processes or nodes, each appended to ``output`` by this process, the table's single
    writer, as it finishes (completion order).

    Resumable like ``profile``: a run killed at any point leaves the finished batches whole, and the
    next run measures what is missing. A batch lost on the executor (its worker killed on every try) is
    reported in ``failed`` like a refused kernel, and the rest goes on.
    """
    from hwopt.executors import Task, TaskLost

    def run(todo: list[Kernel], table: TableAppender) -> list[tuple[Kernel, str]]:
        size = batch or batch_size(len(todo), executor.slots)
        tasks = [Task(measure_on_worker, (target, todo[i:i + size], backend_options, executor.one_cpu_per_task))
                 for i in range(0, len(todo), size)]
        results = (([], [(k, f"lost: {result.reason}") for k in tasks[index].args[1]])
                   if isinstance(result, TaskLost) else result for index, result in executor.run(tasks))
        return _record(results, len(todo), table, progress, label)

    return _measure(kernels, output, run)
