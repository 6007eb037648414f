"""A kernel's feature vector for the latency and memory regressors.

Raw geometry (kind, H/W, Cin, Cout, kernel, stride, groups, dtype bytes) plus
derived figures the latency mostly follows, so the trees only learn the
residual structure:

- work: MACs/FLOPs, parameter, input and output bytes (in the target's dtype);
- the accelerator's staircase: ceil(C/P) and C mod P for both channel counts,
  MACs and bytes with channels padded to P;
- the array mapping of a P x P weight-stationary array: row folds
  ceil(Cin/g * k * kw / P), column folds ceil(Cout/g / P), their product per
  group, and ``fold_cycles`` = folds x (output pixels + P), a first-order
  cycle count of streaming every fold (what a systolic array spends);
- vector-unit work for the other kinds (elements the lanes touch, window taps);
- ``log_prior``: the array's cycle count as a weight-stationary systolic
  array spends it, folds x (output pixels + 3P fill/drain) plus, once per
  kernel (a depthwise conv's channels, a grouped conv's groups, a batched
  matmul's heads run pipelined, ``hwopt.backends.scalesim.pipelined_cycles``),
  a set-up of PREFETCH_P x P and the first input and weight tiles (up to
  TILE_P x P bytes each, of one run) loaded at P/2 bytes per cycle; or, if longer, the bytes it streams at P per cycle
  (the unfolded input per column fold unless it fits in a tile, partial
  sums per row fold: what makes a dense conv at high resolution
  memory-bound); plus the fused activation; the
  vector-unit work for the other kinds, and for depthwise convs on a target
  of the ``depthwise = "vector"`` class (K*K MACs per output element). The regressors use it as an offset
  with slope 1 (``regressor.py``), so a kernel larger than any in the table
  is scaled by it rather than clamped to the largest one seen.

Everything is computed vectorised over a batch of kernels (the search scores
thousands of variants), as float64 columns named in ``FEATURES``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hwopt.analysis.kernel import CONV_KINDS, KINDS, Kernel

# Elementary operations per element of an activation: prior knowledge that carries to activations the
# training sweep lacks (e.g. hardswish seen only in a held-out family). Unknown names count as 4.
# <op>(per channel): an elementwise op by a constant of one value per channel, read per element where
# constants live (hwopt.analysis.kernels.constant_operand_form).
# prelu: Vela lowers a per-channel PReLU to three passes over the map (MUL by the slope, MUL, MAXIMUM) and
# reads the slope per element from where constants live (flash on U55): not a cheap lane op. With a slope
# over 1 it is four passes (MINIMUM, MUL, RELU, ADD: hwopt.analysis.kernels.prelu_form), with one slope a
# LeakyReLU. A standalone BatchNormalization is written as a MUL and an ADD by per-channel constants: two
# per-channel ops.
ACT_OPS = {"": 0, "relu": 1, "relu6": 1, "clip": 1, "leakyrelu": 2, "prelu": 6, "hardsigmoid": 2, "hardswish": 3,
           "x*hardsigmoid": 3, "sigmoid": 4, "silu": 5, "swish": 5, "tanh": 4, "gelu": 6, "mul": 1, "add": 1,
           "batchnormalization": 8, "prelu(one slope)": 2, "prelu(slopes over 1)": 12, "sub": 1, "max": 1,
           "min": 1, **{f"{op}(per channel)": 4 for op in ("add", "sub", "mul", "max", "min")}}
_ACT_DEFAULT = 4

FEATURES = (
    "kind", "cin", "cout", "h", "w", "out_h", "out_w", "kernel", "kw", "stride", "groups", "inputs", "batch",
    "dtype_bytes", "act_ops", "log_macs", "log_flops", "log_param_bytes", "log_in_bytes", "log_out_bytes",
    "log_bytes", "cin_steps", "cin_mod", "cout_steps", "cout_mod", "log_padded_macs", "log_padded_bytes",
    "row_folds", "col_folds", "log_folds", "log_fold_cycles", "log_vector_work", "log_pixels",
    "pad_waste", "log_proxy", "log_proxy_fill4", "log_prior", "transposed", "weight_zeros",
    "log_coded_param_bytes", "layout_op", "dilation", "log_dilation_passes", "graph_input",
)
# Which data move a layout kernel is (0 for every other kind): a Transpose reorders the whole map, a Pad or a
# Slice copies it, a Split or Gather copies parts; one 'layout' group holds them all, and without this the
# trees priced a BlazeFace channel Pad from the 368x368 Transposes beside it (9.6 ms against Vela's 0.6).
LAYOUT_OPS = {"Transpose": 1, "Pad": 2, "Slice": 3, "Split": 4, "Gather": 5, "SpaceToDepth": 6, "DepthToSpace": 6,
              "Tile": 7, "Expand": 7}
# The bytes a weight codec moves per int8 weight byte, by the share of zeros z: 1 - CODED_ZERO_SAVING * z.
# Vela's codec on pruned MediaPipe models: 70% zeros encode to 0.40 of the int8 size, 40% to 0.67, dense
# trained weights to 0.87-1.0; a zero costs about a sixth of a byte.
CODED_ZERO_SAVING = 0.83
# First-order cycle model (in lanes-cycles: P elements or P bytes per cycle), the regressors' base:
# array kinds: every fold streams the output pixels plus a fill/drain of FILL_P x P cycles, or the bytes
# at P per cycle if that is longer, plus the fused activation on the lanes; other kinds: the lanes'
# work or the bytes, whichever is longer, plus a launch of LAUNCH_P x P cycles. The constants are
# generic guesses (they made the npu32 per-kernel CV error 3-5x smaller); the learned parts correct them.
FILL_P = 12
LAUNCH_P = 2
# The prior's set-up per mapped layer and the largest tile it loads first (on npu32's table these constants
# leave a log residual of 0.13 against 0.27 for the plain fold count, and no trend with size).
PREFETCH_P = 8
TILE_P = 4096
KIND_CODE = {kind: index for index, kind in enumerate(KINDS)}


def act_ops(act: str) -> float:
    """Elementary ops per element of an activation chain such as ``relu6`` or ``clip+mul``."""
    return float(sum(ACT_OPS.get(part.lower(), _ACT_DEFAULT) for part in act.split("+") if part))


def _ceil_div(a: np.ndarray, b: float) -> np.ndarray:
    return np.ceil(a / b)


def features(kernels: Sequence[Kernel], parallelism: int, dtype_bytes: int,
             vector_depthwise: bool = False) -> np.ndarray:
    """One row of ``FEATURES`` per kernel (float64), for a target of parallelism P and dtype bytes.

    ``vector_depthwise``: the target runs depthwise convs on its vector unit (hardware class "vector"), so
    their prior is the vector unit's work, not the array's folds.
    """
    p = float(max(parallelism, 1))
    n = len(kernels)
    col = {name: np.empty(n) for name in ("kind", "cin", "cout", "h", "w", "out_h", "out_w", "kernel", "kw",
                                           "stride", "groups", "inputs", "batch", "kdtype", "act_ops", "macs",
                                           "flops", "weights", "in_el", "out_el", "is_conv", "is_gemm",
                                           "transposed", "zeros", "layout_op", "dilation", "graph_input")}
    for i, k in enumerate(kernels):
        col["kind"][i] = KIND_CODE.get(k.kind, -1)
        for name in ("cin", "cout", "h", "w", "out_h", "out_w", "kernel", "kw", "stride", "groups", "inputs",
                     "batch"):
            col[name][i] = getattr(k, name)
        col["kdtype"][i] = k.dtype_bytes
        # a standalone activation's own op, plus the activation an elementwise op by a constant runs after it
        col["act_ops"][i] = act_ops(k.act if k.kind != "act" else "+".join(p for p in (k.op or "act", k.act) if p))
        col["macs"][i] = k.macs
        col["flops"][i] = k.flops
        col["weights"][i] = k.weight_elements
        col["in_el"][i] = k.in_elements
        col["out_el"][i] = k.out_elements
        col["is_conv"][i] = k.kind in CONV_KINDS
        col["is_gemm"][i] = k.kind == "gemm"
        # A ConvTranspose is described as the 1x1-like conv it computes per input pixel (cout x s^2), but an
        # NPU compiler lowers it its own way (Vela: TransposeConv, several times a 1x1 conv's cycles on
        # ethos-u85-256 inside a model); without this the trees cannot tell the two apart. Appended last: a
        # model trained before it reads its own columns (``KernelRegressor.columns``).
        col["transposed"][i] = k.op == "ConvTranspose"
        col["zeros"][i] = k.weight_zeros / 100.0  # pruned weights (Kernel.weight_zeros); appended last too
        col["layout_op"][i] = LAYOUT_OPS.get(k.op, 8) if k.kind == "layout" else 0  # appended last too
        col["dilation"][i] = k.dilation  # appended last too
        col["graph_input"][i] = k.graph_input  # appended last too
    db = float(dtype_bytes)
    cin, cout, groups = col["cin"], col["cout"], np.maximum(col["groups"], 1)
    gemm = col["is_gemm"] > 0
    # A gemm's rows are over all its groups (attention's heads), each group a cin x cout product.
    pixels = np.where(gemm, np.maximum(col["batch"] / groups, 1), col["out_h"] * col["out_w"])
    win = col["kernel"] * col["kw"]
    cin_pad, cout_pad = _ceil_div(cin, p) * p, _ceil_div(cout, p) * p
    # Depthwise/grouped: padding applies to the channel dimension; per-group input stays cin/g.
    per_group_in = np.where(gemm, cin, np.maximum(cin / groups, 1))
    per_group_out = np.where(gemm, cout, np.maximum(cout / groups, 1))
    array = (col["is_conv"] + col["is_gemm"]) > 0
    # Where the kernel runs: the array, or (a depthwise engine's dwconv) the vector unit.
    on_vector = (col["kind"] == KIND_CODE["dwconv"]) & bool(vector_depthwise)
    padded_macs = np.where(array, np.where(gemm, cin_pad * cout_pad * groups,
                                           np.where(groups > 1, cout_pad * per_group_in, cin_pad * cout_pad))
                           * win * pixels, 0.0)
    row_folds = np.where(array, _ceil_div(per_group_in * win, p), 0.0)
    col_folds = np.where(array, _ceil_div(per_group_out, p), 0.0)
    folds = row_folds * col_folds * np.where(array, groups, 0.0)
    fold_cycles = folds * (pixels + p)
    in_bytes, out_bytes = col["in_el"] * db, col["out_el"] * db
    param_bytes = col["weights"] * db
    spatial_in = np.maximum(col["in_el"] / np.maximum(cin, 1), 1)
    spatial_out = np.maximum(col["out_el"] / np.maximum(cout, 1), 1)
    padded_bytes = (cin_pad * spatial_in * np.where(col["kind"] == KIND_CODE["concat"], 1, col["inputs"])
                    + cout_pad * spatial_out) * db + param_bytes
    taps = np.where(col["kind"] == KIND_CODE["pool"], win, 1.0)
    # A pool reads its window once per output (at least every input once): a global-window AveragePool
    # (tflite2onnx's squeeze-excite) is one pass over its input, not the input times the window.
    touched = np.where(taps > 1, np.maximum(col["out_el"] * taps, col["in_el"]),
                       np.maximum(col["out_el"], col["in_el"]))
    lanes_work = np.where(array, col["out_el"] * col["act_ops"],
                          touched * np.maximum(col["inputs"] - 1, 1) + col["out_el"] * col["act_ops"])
    vector_work = np.where(on_vector, col["out_el"] * (win + col["act_ops"]), lanes_work)
    fused_act = out_bytes / db * col["act_ops"] / p
    proxies = []
    mapped = array & ~on_vector
    for fill in (FILL_P, 4):
        compute = np.where(mapped, folds * (pixels + fill * p), vector_work / p)
        proxies.append(np.maximum(compute, (in_bytes + out_bytes + param_bytes) / p)
                       + np.where(mapped, fused_act, LAUNCH_P * p))
    sims = np.where(mapped, groups, 0.0)  # layers mapped onto the array: one per group
    per_sim = np.maximum(sims, 1)
    tiles = (np.minimum(in_bytes / per_sim, TILE_P * p) + np.minimum(param_bytes / per_sim, TILE_P * p)) / (p / 2)
    # What the array streams through memory: the unfolded input once per column fold (once in all when
    # the input fits in a tile), partial sums written once per row fold, the weights once.
    rereads = np.where(in_bytes / per_sim > TILE_P * p, col_folds, 1.0)
    streamed = np.where(mapped, sims * pixels * (per_group_in * win * rereads + per_group_out * row_folds) * db
                        + param_bytes, in_bytes + out_bytes + param_bytes)
    # The runs of one kernel (one per group) are pipelined: one set-up, the first run's tiles.
    prior = (np.maximum(np.where(mapped, folds * (pixels + 3 * p) + (PREFETCH_P * p + tiles), vector_work / p),
                        streamed / p)
             + np.where(mapped, fused_act, LAUNCH_P * p))
    # A dilated conv as an NPU compiler may split it (Vela above dilation 2: Kernel.dilation): one conv over a
    # strided sub-grid per phase, (dilation / gcd(dilation, stride))^2 of them, each with all the weights.
    dilation_passes = (col["dilation"] / np.gcd(col["dilation"].astype(np.int64),
                                                 np.maximum(col["stride"], 1).astype(np.int64))) ** 2
    log = np.log1p
    out = np.column_stack([
        col["kind"], cin, cout, col["h"], col["w"], col["out_h"], col["out_w"], col["kernel"], col["kw"],
        col["stride"], groups, col["inputs"], col["batch"], np.full(n, db), col["act_ops"],
        log(col["macs"]), log(col["flops"]), log(param_bytes), log(in_bytes), log(out_bytes),
        log(in_bytes + out_bytes + param_bytes), _ceil_div(cin, p), np.mod(cin, p), _ceil_div(cout, p),
        np.mod(cout, p), log(padded_macs), log(padded_bytes), row_folds, col_folds, log(folds),
        log(fold_cycles), log(vector_work), log(pixels), cin_pad * cout_pad / np.maximum(cin * cout, 1),
        log(proxies[0]), log(proxies[1]), log(prior), col["transposed"], col["zeros"],
        log(param_bytes * (1 - CODED_ZERO_SAVING * col["zeros"])), col["layout_op"],
        col["dilation"], log(dilation_passes), col["graph_input"],
    ])
    return out.astype(np.float64)


# Columns of the log-linear base (see regressor.py): the few figures latency scales with.
# (npu32 prefers the cycle model alone, cpu the three; per group, cross-validation picks.)
BASE_SETS = tuple(tuple(FEATURES.index(c) for c in columns)
                  for columns in (("log_proxy",), ("log_proxy", "log_bytes", "log_flops")))
# A base with slope 1 on a prior (log latency = intercept + log prior): extrapolates as the prior does.
OFFSET_BASES = (FEATURES.index("log_prior"),)
