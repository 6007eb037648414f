"""Scoring variants from kernel descriptors: no ONNX graph per variant.

The canonical model is scheduled once. Each scheduled kernel (a *slot*)
depends on at most a few decision variables: the channel counts of the group
it reads and the group it writes, and the mode of its IBN block or depthwise
conv. For every slot and every combination of those variables we build the
kernel the real rewrite would produce (the *descriptor edits*), predict all
distinct kernels in one batch, and keep per-slot tables of latency, weights
and FLOPs. A variant's latency is then a gather-and-sum over the tables,
vectorised over a whole population of variants.

Descriptor edits (they mirror the rewrites; ``tests/search/test_optimize.py`` checks
them against the schedule of the materialised ONNX model):

- fuse-ibn: the expand conv's slot becomes one KxK conv cin -> hidden at the
  depthwise conv's kernel, stride, output size and activation; the
  depthwise slot disappears.
- dw-to-dense: the depthwise kernel becomes a conv with groups = 1.
- dw-to-grouped (``gN``): a grouped conv of N channels per group (the largest
  divisor of the channel count up to N, as the rule picks it).
- a group's channel count: ``cout`` of its producer convs, ``cin`` of its
  consumer convs (``cin x H x W`` of a flattened Gemm), both of its depthwise
  convs and of every per-channel kernel (act, add, pool, ...) inside it.

Memory is parameters plus the peak of live activations, in the target's
layout (its element size, channels padded to P, as the estimator counts them),
as ``hwopt.analysis.kernels.peak_live_bytes`` computes it on the edited schedule: the
live sets per step are fixed by the schedule (fusion swaps two steps of one
block for one), so per variant only tensor sizes change: a matrix product.

On a target with a memory budget (``onchip``: its ``memory_budget_bytes`` and
``offchip_bytes_per_us``), a variant's latency includes the DRAM charge of
what does not fit on chip (``hwopt.estimator.memory.POLICY``), as ``hwopt
estimate`` and ``hwopt measure`` count it: N-fold grouped weights cost their
traffic, by default, not only under ``--max-memory``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Callable, Protocol, Sequence

import numpy as np

from hwopt.estimator.memory import memory_charge_us, param_elements
from hwopt.analysis.kernels import pad_channels, schedule
from hwopt.analysis.kernel import CONV_KINDS, Kernel, Schedule, ScheduledKernel
from hwopt.rewrites.dw_to_grouped import group_width
from hwopt.search.space import Space, grouped_width
from hwopt.analysis.sites import Analysis


class CostModel(Protocol):
    """What the search needs from an estimator: latency in microseconds per kernel."""

    name: str

    def predict(self, kernels: Sequence[Kernel]) -> np.ndarray:
        ...


@dataclass
class Score:
    latency_us: float
    params: int
    flops: int
    peak_activation_bytes: int
    memory_bytes: int  # params + peak activations, at the target's element size


@dataclass
class _Slot:
    index: int
    base: ScheduledKernel
    deps: tuple[int, ...]  # variable indices this slot's kernel depends on
    build: Callable[[dict[int, object]], Kernel | None]  # var index -> option value
    kernels: list[Kernel | None]  # per combination of deps (mixed radix, first dep most significant)


def _live_sets(steps: list[tuple[list[str], str, bool]], inputs: dict[str, int], outputs: list[str]) -> list[set[str]]:
    """Live tensors at each step (after its output is written), as ``peak_live_bytes`` counts them.

    Row 0 is the graph inputs alone; row i + 1 is step i.
    """
    last_use: dict[str, int] = {}
    for index, (ins, _, _) in enumerate(steps):
        for name in ins:
            last_use[name] = index
    final = set(outputs)
    live = set(inputs)
    rows = [set(live)]
    for index, (ins, out, is_view) in enumerate(steps):
        if not is_view:
            live.add(out)
        else:
            for name in ins:
                last_use[name] = max(last_use.get(name, index), last_use.get(out, index))
        rows.append(set(live))
        for name in [n for n in live if last_use.get(n, -1) <= index and n not in final]:
            live.discard(name)
    return rows


class VariantModel:
    """Scores variants of one canonical model on one target with one cost model."""

    def __init__(self, analysis: Analysis, space: Space, fusion, dtype_bytes: int, cost: CostModel,
                 progress: Callable[[str, int, int], None] | None = None, pad_to: int | None = None,
                 onchip=None) -> None:
        self.analysis, self.space, self.cost = analysis, space, cost
        # The target whose memory budget is charged (None, or a target without one: no charge).
        self.onchip = onchip if onchip is not None and onchip.memory_budget_bytes and onchip.offchip_bytes_per_us \
            else None
        # The target's memory layout: channels padded to P (as the estimator counts memory).
        self.pad_to = space.p if pad_to is None else pad_to
        self.dtype_bytes = dtype_bytes  # the target's element size, for memory figures
        self.sched: Schedule = schedule(analysis.model, fusion)
        self.by_node = self.sched.by_node()
        nodes = {n.name: n for n in analysis.graph.nodes}
        self._nodes = nodes
        variables = space.variables
        self.values = [[o.value for o in v.options] for v in variables]
        # Which variable sets each tensor's channels (and to what, per option), and each block's /
        # depthwise conv's mode.
        self.tensor_var: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.gemm_in: dict[str, tuple[int, int, tuple[int, ...]]] = {}
        self.mode_of: dict[str, tuple[int, str]] = {}  # node name -> (var, "expand" | "dw")
        for vi, var in enumerate(variables):
            for group, widths in var.tables:
                for tensor in group.tensors:
                    self.tensor_var[tensor.name] = (vi, widths)
                for consumer in group.consumers:
                    if consumer.node.op in ("Gemm", "MatMul"):
                        self.gemm_in[consumer.node.name] = (vi, consumer.spatial, widths)
            if var.kind == "block":
                self.mode_of[var.block.expand.name] = (vi, "expand")
                self.mode_of[var.dw.node.name] = (vi, "dw")
            elif var.kind == "dw":
                self.mode_of[var.dw.node.name] = (vi, "dw")
        self.slots = [self._slot(i, sk) for i, sk in enumerate(self.sched.kernels)]
        self._predict_tables(progress)
        self._memory_model()

    # -- slots ---------------------------------------------------------------------------------
    def _slot(self, index: int, sk: ScheduledKernel) -> _Slot:
        node = self._nodes[sk.nodes[0]]
        base = sk.kernel
        variables = [t for t in node.inputs if t.name and not hasattr(t, "values")]
        in_name = variables[0].name if variables else None
        in_var = self.tensor_var.get(in_name) if in_name else None
        out_var = self.tensor_var.get(node.outputs[0].name)
        gemm = self.gemm_in.get(node.name)
        mode = self.mode_of.get(node.name)
        dw_base = None
        if mode is not None and mode[1] == "expand":
            dw_base = self.sched.kernels[self.by_node[self.space.variables[mode[0]].dw.node.name]].kernel
        deps = tuple(dict.fromkeys(v[0] for v in (in_var, out_var, gemm, mode) if v is not None))

        def build(picked: dict[int, int]) -> Kernel | None:
            """The slot's kernel for these option indices of its variables."""
            cin = in_var[1][picked[in_var[0]]] if in_var is not None else None
            cout = out_var[1][picked[out_var[0]]] if out_var is not None else None
            how = self.values[mode[0]][picked[mode[0]]] if mode is not None else None
            if mode is not None and mode[1] == "expand" and how == "fuse":
                d = dw_base
                # The fused conv reads what the expand conv read and writes what the depthwise wrote:
                # it pays their layout conversions (hwopt.analysis.layout). Its weights are new (to be
                # trained); they are taken to be as pruned as the expand conv's, by the model's own pipeline.
                return Kernel("conv", cin or base.cin, cout or base.cout, base.h, base.w, d.out_h, d.out_w,
                              d.kernel, d.kw, d.stride, 1, d.act, dtype_bytes=d.dtype_bytes,
                              weight_zeros=base.weight_zeros, dilation=d.dilation, graph_input=base.graph_input,
                              reorder_in=base.reorder_in,
                              reorder_out=d.reorder_out)
            if base.kind == "dwconv":
                if how == "fuse":
                    return None
                c = cout or base.cin
                multiplier = base.cout // max(base.cin, 1)
                # Channels per group: all of them (dense), the rule's group width, or one (as is).
                per_group = grouped_width(how)
                width = c if how == "dense" else group_width(c, per_group) if per_group is not None else 1
                kind = "conv" if width == c else "dwconv" if width == 1 else "gconv"
                # The rewrite's weights are block-diagonal in each group (exact): all but one in
                # ``width`` of them are zeros, which a weight codec encodes away (Kernel.weight_zeros).
                dense_share = (1 - base.weight_zeros / 100) / width
                return replace(base, kind=kind, cin=c, cout=c * multiplier, groups=c // width,
                               weight_zeros=int(round((1 - dense_share) * 10)) * 10)
            if base.kind == "gemm":
                return replace(base, cin=gemm[2][picked[gemm[0]]] * gemm[1]) if gemm else base
            if base.kind in CONV_KINDS:
                return replace(base, cin=cin or base.cin, cout=cout or base.cout)
            new_cin = cin if cin is not None else base.cin
            new_cout = cout if cout is not None else base.cout
            if cout is None and cin is not None and base.kind in ("view", "layout") and base.cout % max(base.cin, 1) == 0:
                new_cout = base.cout // base.cin * cin  # a flatten: C x H x W values
            return replace(base, cin=new_cin, cout=new_cout)

        combos = itertools.product(*(range(len(self.values[v])) for v in deps))
        kernels = [build(dict(zip(deps, combo))) for combo in combos]
        return _Slot(index, sk, deps, build, kernels)

    def _predict_tables(self, progress) -> None:
        distinct = list(dict.fromkeys(k for slot in self.slots for k in slot.kernels if k is not None))
        if progress:
            progress(f"predicting {len(distinct)} kernels ({self.cost.name})", 0, len(distinct))
        latency = dict(zip(distinct, np.asarray(self.cost.predict(distinct), dtype=np.float64)))
        if progress:
            progress(f"predicting {len(distinct)} kernels ({self.cost.name})", len(distinct), len(distinct))
        self.distinct_kernels = len(distinct)
        self._latency = latency
        # One flat table per figure; each slot owns a segment, indexed by the mixed radix of its deps.
        self.max_deps = max((len(s.deps) for s in self.slots), default=0)
        v = len(self.space.variables)
        lat, weights, flops, offsets = [], [], [], []
        dep_cols = np.full((len(self.slots), max(self.max_deps, 1)), v, dtype=np.int64)  # v: a zero column
        strides = np.zeros((len(self.slots), max(self.max_deps, 1)), dtype=np.int64)
        for i, slot in enumerate(self.slots):
            offsets.append(len(lat))
            for k in slot.kernels:
                lat.append(latency[k] if k is not None else 0.0)
                weights.append(param_elements(k, self.pad_to) if k is not None else 0)
                flops.append(k.flops if k is not None and k.macs else 0)
            sizes = [len(self.values[d]) for d in slot.deps]
            stride = 1
            for j in reversed(range(len(slot.deps))):
                dep_cols[i, j], strides[i, j] = slot.deps[j], stride
                stride *= sizes[j]
        self._lat, self._weights, self._flops = np.array(lat), np.array(weights, np.int64), np.array(flops, np.int64)
        self._offsets, self._dep_cols, self._strides = np.array(offsets, np.int64), dep_cols, strides

    def _memory_model(self) -> None:
        sched = self.sched
        steps = [(sk.inputs, sk.output, sk.kernel.kind == "view") for sk in sched.kernels]
        base_rows = _live_sets(steps, sched.input_bytes, sched.outputs)
        rows: list[set[str]] = list(base_rows)
        owner: list[tuple[int, int]] = [(-1, -1)] * len(rows)  # (block var, +1 fused row / -1 unfused row)
        for vi, var in enumerate(self.space.variables):
            if var.kind != "block" or "fuse" not in self.values[vi]:
                continue
            e, d = self.by_node[var.block.expand.name], self.by_node[var.dw.node.name]
            fused = [s for s in steps]
            fused[e] = (steps[e][0], steps[d][1], False)
            del fused[d]
            alt = _live_sets(fused, sched.input_bytes, sched.outputs)
            for r in range(e + 1, d + 2):  # base rows of steps e..d
                owner[r] = (vi, -1)
            for r in range(e + 1, d + 1):  # fused rows of steps e..d-1 (the fused conv and what sat between)
                rows.append(alt[r])
                owner.append((vi, 1))
        names = list(dict.fromkeys(n for row in rows for n in row))
        # Each tensor: bytes per channel (model dtype) x its channel count, padded to P the way
        # peak_live_bytes pads (kernel outputs with a spatial extent or from a conv; not graph inputs).
        unit: dict[str, float] = {n: float(b) for n, b in sched.input_bytes.items()}
        width: dict[str, int] = {n: 1 for n in sched.input_bytes}
        padded: dict[str, bool] = {n: False for n in sched.input_bytes}
        for sk in sched.kernels:
            k = sk.kernel
            unit[sk.output] = sk.output_bytes / max(k.cout, 1)
            width[sk.output] = k.cout
            padded[sk.output] = not (k.out_h * k.out_w == 1 and k.kind not in CONV_KINDS)
        self._tensor_names = names
        self._tensor_unit = np.array([unit.get(n, 0.0) for n in names], dtype=np.float64)
        self._tensor_width = np.array([pad_channels(width.get(n, 1), self.pad_to) if padded.get(n) else width.get(n, 1)
                                       for n in names], dtype=np.float64)
        model_dtype = next((sk.kernel.dtype_bytes for sk in sched.kernels), 4)
        self._to_target = self.dtype_bytes / max(model_dtype, 1)
        self._live = np.zeros((len(rows), len(names)), dtype=np.float64)
        col = {n: i for i, n in enumerate(names)}
        for r, row in enumerate(rows):
            for n in row:
                self._live[r, col[n]] = 1.0
        self._row_owner = np.array([o[0] for o in owner], dtype=np.int64)
        self._row_sign = np.array([o[1] for o in owner], dtype=np.int64)
        self._fuse_index = {vi: self.values[vi].index("fuse") for vi in set(self._row_owner.tolist()) if vi >= 0}
        # Per channel variable: its tensors' columns and each option's (padded) channel count.
        self._scales = []
        for vi, var in enumerate(self.space.variables):
            for group, options in var.tables:
                cols = [col[t.name] for t in group.tensors if t.name in col]
                for pad in (True, False):
                    chosen = np.array([c for c in cols if padded.get(names[c]) == pad], dtype=np.int64)
                    if len(chosen):
                        widths = np.array([pad_channels(w, self.pad_to) if pad else w for w in options], dtype=np.float64)
                        self._scales.append((vi, chosen, widths))

    # -- scoring -------------------------------------------------------------------------------
    def _flat(self, decisions: np.ndarray) -> np.ndarray:
        padded = np.concatenate([decisions, np.zeros((len(decisions), 1), dtype=np.int64)], axis=1)
        picked = padded[:, self._dep_cols]  # (N, slots, deps)
        return self._offsets[None, :] + (picked * self._strides[None]).sum(axis=2)

    def latency(self, decisions: np.ndarray) -> np.ndarray:
        """Estimated latency (us) of each variant, rows of option indices (with the memory charge)."""
        if self.onchip is not None:
            return self.evaluate(decisions)["latency_us"]
        return self._lat[self._flat(np.asarray(decisions, dtype=np.int64))].sum(axis=1)

    def evaluate(self, decisions: np.ndarray) -> dict[str, np.ndarray]:
        """Latency, params, FLOPs, peak activations and memory of each variant (vectorised)."""
        d = np.asarray(decisions, dtype=np.int64)
        flat = self._flat(d)
        widths = np.repeat(self._tensor_width[None, :], len(d), axis=0)
        for vi, cols, options in self._scales:
            widths[:, cols] = options[d[:, vi]][:, None]
        sizes = widths * self._tensor_unit[None, :]
        live = sizes @ self._live.T  # (N, rows)
        active = np.ones_like(live, dtype=bool)
        for vi, fuse in self._fuse_index.items():
            fused = (d[:, vi] == fuse)[:, None]
            rows = self._row_owner == vi
            active[:, rows] = np.where(self._row_sign[rows] > 0, fused, ~fused)
        peak_model = np.where(active, live, -np.inf).max(axis=1)
        peak = peak_model * self._to_target
        params = self._weights[flat].sum(axis=1)
        charge = (memory_charge_us(params * self.dtype_bytes, peak, self.onchip) if self.onchip is not None
                  else np.zeros(len(d)))
        return {
            "latency_us": self._lat[flat].sum(axis=1) + charge,
            "memory_charge_us": charge,
            "params": params,
            "flops": self._flops[flat].sum(axis=1),
            "peak_model_bytes": peak_model,  # at the model's dtype: peak_live_bytes(schedule, pad_to)
            "peak_activation_bytes": peak,
            "memory_bytes": params * self.dtype_bytes + peak,
        }

    def score(self, decisions: tuple[int, ...]) -> Score:
        figures = self.evaluate(np.array([decisions]))
        return Score(float(figures["latency_us"][0]), int(figures["params"][0]), int(figures["flops"][0]),
                     int(figures["peak_activation_bytes"][0]), int(figures["memory_bytes"][0]))

    # -- one variant, kernel by kernel ---------------------------------------------------------
    def kernels(self, decisions: tuple[int, ...]) -> list[Kernel | None]:
        """The variant's kernel per slot of the base schedule (None: removed by fusion)."""
        out = []
        for slot in self.slots:
            index = 0
            for dep in slot.deps:
                index = index * len(self.values[dep]) + decisions[dep]
            out.append(slot.kernels[index])
        return out

    def slot_latencies(self, decisions: tuple[int, ...]) -> np.ndarray:
        return np.array([self._latency[k] if k is not None else 0.0 for k in self.kernels(decisions)])

    def block_slots(self) -> dict[str, list[int]]:
        """Slots of each IBN block (expand, depthwise, SE, project, residual add)."""
        found: dict[str, list[int]] = {}
        for block in self.analysis.blocks:
            nodes = [block.expand, block.depthwise, block.project, block.residual]
            if block.se is not None:
                nodes += list(block.se.nodes) + [block.se.mul]
            slots = {self.by_node[n.name] for n in nodes if n is not None and n.name in self.by_node}
            found[block.id] = sorted(slots)
        return found
