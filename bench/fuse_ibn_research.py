"""Offline research harness for fuse-ibn's weight fit (not a test, not part of hwopt).

    python bench/fuse_ibn_research.py collect [--rows 64] [--upstream original|lstsq]
    python bench/fuse_ibn_research.py eval ALGO [ALGO ...]

``collect`` runs onnxruntime once over the calibration (512) and held-out (32)
samples of the MobileNetV2 example and caches, per block (ibn1..ibn3), the
numpy data a block fit sees, at seeded random output positions (rows):

- ``X``: im2col patch rows of the block input (as the upstream model computes it),
- ``pre`` / ``post``: the original depthwise conv's output before / after its activation,
- ``Y``: the original block output, ``skip``: the residual operand (upstream model), or zeros,
- the original expand / depthwise / project weights.

``--upstream original`` takes block inputs from the original model (each block fitted in
isolation); ``lstsq`` from the model rewritten by the current fuse-ibn (what the pipeline
sees for blocks 2 and 3). ``eval`` fits each named algorithm on every block's training
rows and prints block output cosine / rel L2 on the held-out rows and the fit seconds.
``pipeline ALGO ...`` fits the blocks in order, each from the inputs the model rewritten so
far computes (onnxruntime; targets from the ``original`` cache, so collect that first), and
prints the final output's cosine on the held-out samples, as bench/fuse_ibn_refit.py does.

Algorithms (``ALGOS``): ``current`` per-channel ridge fit + clip MM, then project lstsq (hwopt
before this work); ``hwopt`` what hwopt.rewrites.fitting does now; ``ownN[rR]`` N joint L-BFGS steps on
(fused conv, project) [on R rows]; ``ridgeA_B`` ridge A for the fused conv, B for the project;
``rowsR`` R rows; ``hvm`` hidden pre-activation variance matched; suffixes ``_vm`` / ``_vq`` /
``_cm``: block output variance / project output variance / full covariance matched.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.build import build_example  # noqa: E402
from hwopt.calibration.samples import OrtRunner, random_inputs  # noqa: E402
from hwopt.canonical.canonicalize import load_canonical  # noqa: E402
from hwopt.analysis.graph import conv_bias, conv_weight  # noqa: E402
from hwopt.analysis.sites import Analysis  # noqa: E402

CACHE = Path("/tmp/fuse_ibn_research")
BLOCKS = ["ibn1", "ibn2", "ibn3"]


def _patch_rows(x: np.ndarray, attrs, n, i, j) -> np.ndarray:
    (kh, kw), (sh, sw), (dh, dw) = attrs.kernel, attrs.strides, attrs.dilations
    top, left, bottom, right = attrs.pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    win = np.lib.stride_tricks.sliding_window_view(padded, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]
    return win[n, :, i, j].reshape(len(n), -1)


def _setup():
    with tempfile.TemporaryDirectory() as tmp:
        path = build_example("mobilenetv2", Path(tmp))
        original, canonical, _ = load_canonical(path, [])
    return original, canonical, random_inputs(original, 512, seed=0), random_inputs(original, 32, seed=1)


def collect_block(source, canonical, block, index, calibration, evaluation, rows, eval_rows, refs=True):
    """The cached arrays of one block: inputs (X, skip) from ``source``, targets from ``canonical``."""
    attrs = block.dw_attrs
    post_name = block.depthwise_acts[-1].output.name
    x_name, residual = block.input.name, block.residual is not None
    ref_names = [block.depthwise.outputs[0].name, post_name, block.output.name]
    src = OrtRunner(source, [x_name], only_extra=True)
    ref = OrtRunner(canonical, ref_names if refs else [block.output.name], only_extra=True)
    data = {}
    for split, samples, per in (("train", calibration, rows), ("test", evaluation, eval_rows)):
        rng = np.random.default_rng([7, index, split == "test"])
        parts = {k: [] for k in (("X", "pre", "post", "Y", "skip") if refs else ("X", "skip"))}
        for (sl, xs), (_, ys) in zip(src.iter_batches(samples), ref.iter_batches(samples)):
            y = ys[block.output.name]
            b, _, ho, wo = y.shape
            flat = np.concatenate([k * ho * wo + rng.choice(ho * wo, per, replace=False) for k in range(b)])
            n, rest = np.divmod(flat, ho * wo)
            i, j = np.divmod(rest, wo)
            x = xs[x_name]
            parts["X"].append(_patch_rows(x, attrs, n, i, j))
            parts["skip"].append(x[n, :, i, j] if residual else np.zeros_like(y[n, :, i, j]))
            if refs:
                parts["pre"].append(ys[ref_names[0]][n, :, i, j])
                parts["post"].append(ys[ref_names[1]][n, :, i, j])
                parts["Y"].append(y[n, :, i, j])
        for k, v in parts.items():
            data[f"{split}_{k}"] = np.concatenate(v).astype(np.float32)
    if refs:
        hidden = block.hidden_channels
        zeros = np.zeros(hidden, np.float32)
        data.update(
            expand_w=conv_weight(block.expand), expand_b=_or(conv_bias(block.expand), zeros),
            dw_w=conv_weight(block.depthwise), dw_b=_or(conv_bias(block.depthwise), zeros),
            project_w=conv_weight(block.project),
            project_b=_or(conv_bias(block.project), np.zeros(block.out_channels, np.float32)),
        )
    return data


def collect(upstream: str, rows: int, eval_rows: int) -> None:
    original, canonical, calibration, evaluation = _setup()
    source = canonical
    if upstream == "lstsq":
        from hwopt.rewrites.apply import apply_steps
        from hwopt.rewrites.ruleset import parse_rule_option
        step = parse_rule_option("fuse-ibn:init=lstsq,project=refit@" + ",".join(BLOCKS))
        source = apply_steps(original, canonical, [step], calibration, evaluation).model
    sites = {s.id: s.target for s in Analysis(canonical).of_kind("ibn")}
    CACHE.mkdir(exist_ok=True)
    for index, name in enumerate(BLOCKS):
        data = collect_block(source, canonical, sites[name], index, calibration, evaluation, rows, eval_rows)
        np.savez(CACHE / f"{name}_{upstream}_{rows}.npz", **data)
        print(name, {k: v.shape for k, v in data.items() if k.startswith("train")}, flush=True)


def pipeline(algos: list[str], rows: int, eval_rows: int) -> None:
    """Fit blocks in order with inputs from the model rewritten so far (onnxruntime), then the final cosine."""
    import onnx_graphsurgeon as gs
    from hwopt.analysis.graph import export_graph
    from hwopt.rewrites.fuse_ibn import FuseIBN
    from hwopt.fidelity.verify import compare_models
    original, canonical, calibration, evaluation = _setup()
    for algo in algos:
        analysis = Analysis(canonical)
        sites = {s.id: s.target for s in analysis.of_kind("ibn")}
        current = canonical
        cells = []
        seconds = 0.0
        for index, name in enumerate(BLOCKS):
            block = sites[name]
            cached = load(name, "original", rows)
            data = collect_block(current, canonical, block, index, calibration, evaluation, rows, eval_rows,
                                 refs=False) if index else {}
            data = {**cached, **data}
            start = time.perf_counter()
            F, P = ALGOS[algo](data)
            seconds += time.perf_counter() - start
            cos, rel = evaluate(data, F, P)
            cells.append(f"{cos:.4f}")
            k, h = block.dw_attrs.kernel, block.hidden_channels
            FuseIBN._replace(analysis.graph, block, F[:-1].T.reshape(h, block.in_channels, *k).copy(), F[-1].copy())
            project = block.project
            project.inputs[1] = gs.Constant(project.name + "_W_x", np.ascontiguousarray(P[:-1].T[:, :, None, None]))
            project.inputs[2] = gs.Constant(project.name + "_B_x", np.ascontiguousarray(P[-1]))
            current = export_graph(analysis.graph, canonical)
        final = compare_models(original, current, evaluation).outputs[0]
        print(f"{algo:24s} blocks (held-out rows) {' / '.join(cells)}  final cos {final.cosine:.4f} "
              f"rel L2 {final.rel_l2:.3f}  fit {seconds:.1f}s", flush=True)


def _or(a, b):
    return a if a is not None else b


def load(name: str, upstream: str, rows: int) -> dict[str, np.ndarray]:
    with np.load(CACHE / f"{name}_{upstream}_{rows}.npz") as f:
        return {k: f[k] for k in f.files}


# --------------------------------------------------------------------------- algorithms
# Each takes the cached block data and returns (F (K+1, H) with bias row last, P (H+1, Cout) with bias row).

def relu6(z):
    return np.clip(z, 0.0, 6.0)


def aug(x):
    return np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1)


def theta_linear(d):
    from hwopt.rewrites.fitting import linear_fusion_init
    w, b = linear_fusion_init(d["expand_w"], d["expand_b"], d["dw_w"], d["dw_b"])
    return np.concatenate([w.reshape(len(w), -1).T, b[None]], axis=0)


def ridge_solve(xa, y, theta0, ridge):
    xtx = (xa.T @ xa).astype(np.float64)
    scale = float(np.trace(xtx)) / len(xtx)
    lhs = xtx + ridge * scale * np.eye(len(xtx))
    inv = np.linalg.inv(lhs)
    prior = ridge * scale * theta0
    return lambda target: (inv @ ((xa.T @ target).astype(np.float64) + prior)).astype(np.float32)


def fit_f_current(d, ridge=1e-3, rounds=4, rows=None):
    xa = aug(d["train_X"][:rows])
    y = d["train_pre"][:rows]
    solve = ridge_solve(xa, y, theta_linear(d), ridge)
    theta = solve(y)
    for _ in range(rounds):
        pred = xa @ theta
        free = ((y <= 0) & (pred <= 0)) | ((y >= 6) & (pred >= 6))
        theta = solve(np.where(free, pred, y))
    return theta


def fit_p(d, F, ridge=1e-3, rows=None):
    h = aug(relu6(aug(d["train_X"][:rows]) @ F))
    target = (d["train_Y"] - d["train_skip"])[:rows]
    p0 = np.concatenate([d["project_w"][:, :, 0, 0].T, d["project_b"][None]], axis=0)
    return ridge_solve(h, target, p0, ridge)(target)


def evaluate(d, F, P):
    pred = aug(relu6(aug(d["test_X"]) @ F)) @ P + d["test_skip"]
    y = d["test_Y"]
    cos = float((pred * y).sum() / np.linalg.norm(pred) / np.linalg.norm(y))
    return cos, float(np.linalg.norm(pred - y) / np.linalg.norm(y))


def algo_current(d):
    F = fit_f_current(d)
    return F, fit_p(d, F)


def algo_linear(d):
    F = theta_linear(d)
    p0 = np.concatenate([d["project_w"][:, :, 0, 0].T, d["project_b"][None]], axis=0)
    return F, p0


def lbfgs(fg, v, iters, memory=10):
    """Plain L-BFGS with Armijo backtracking (float32 vectors)."""
    loss, g = fg(v)
    ss, ys = [], []
    for _ in range(iters):
        q = g.copy()
        alphas = []
        for s_, y_ in reversed(list(zip(ss, ys))):
            a = (s_ @ q) / (y_ @ s_)
            alphas.append(a)
            q -= a * y_
        if ss:
            q *= (ss[-1] @ ys[-1]) / (ys[-1] @ ys[-1])
        else:
            q *= 1e-3 / max(float(np.abs(g).max()), 1e-12)
        for (s_, y_), a in zip(zip(ss, ys), reversed(alphas)):
            b = (y_ @ q) / (y_ @ s_)
            q += (a - b) * s_
        step = 1.0
        slope = float(g @ q)
        if slope <= 0:
            ss, ys = [], []
            continue
        while True:
            vn = v - step * q
            ln, gn = fg(vn)
            if ln <= loss - 1e-4 * step * slope or step < 1e-4:
                break
            step *= 0.5
        if ln > loss:
            break
        s_, y_ = vn - v, gn - g
        if s_ @ y_ > 1e-12:
            ss.append(s_); ys.append(y_)
            if len(ss) > memory:
                ss.pop(0); ys.pop(0)
        v, loss, g = vn, ln, gn
    return v


def joint_own(d, F, P, iters, rows=None):
    xa = aug(d["train_X"][:rows])
    t = (d["train_Y"] - d["train_skip"])[:rows]
    fs, ps = F.shape, P.shape
    norm = float((t ** 2).sum())

    def fg(v):
        Fv, Pv = v[:F.size].reshape(fs), v[F.size:].reshape(ps)
        z = xa @ Fv
        a = relu6(z)
        e = a @ Pv[:-1] + Pv[-1] - t
        loss = float((e ** 2).sum()) / norm
        gp = np.concatenate([a.T @ e, e.sum(0, keepdims=True)]) * (2 / norm)
        dz = (e @ Pv[:-1].T) * ((z > 0) & (z < 6))
        gf = (xa.T @ dz) * (2 / norm)
        return loss, np.concatenate([gf.ravel(), gp.ravel()]).astype(np.float32)

    v = lbfgs(fg, np.concatenate([F.ravel(), P.ravel()]).astype(np.float32), iters)
    return v[:F.size].reshape(fs), v[F.size:].reshape(ps)


def algo_own(iters, rows=None):
    def run(d):
        F, P = algo_current(d)
        F, P = joint_own(d, F, P, iters, rows)
        return F, fit_p(d, F)
    return run


def algo_hwopt(d):
    """What hwopt.rewrites.fitting now does: per-channel fit, joint refinement (budgeted), project lstsq + variance match."""
    from hwopt.rewrites.fitting import ConvLeastSquares, joint_iterations, refine_hidden_layer
    F = fit_f_current(d)
    xa = aug(d["train_X"])
    target = d["train_Y"] - d["train_skip"]
    steps = joint_iterations(len(xa), xa.shape[1], F.shape[1], target.shape[1])
    if steps:
        F = refine_hidden_layer(xa, target, F, (0.0, 6.0), steps)
    h = relu6(xa @ F)
    project = ConvLeastSquares(h.shape[1], target.shape[1], (1, 1))
    project.update_rows(h, target)
    w, b = project.solve(d["project_w"], d["project_b"], match_variance=True)
    return F, np.concatenate([w[:, :, 0, 0].T, b[None]], axis=0)


def varmatch(d, F, P):
    """Scale each output channel's deviation from its mean so that the block output's variance is the original's."""
    h = aug(relu6(aug(d["train_X"]) @ F))
    q = h @ P
    skip, y = d["train_skip"], d["train_Y"]
    qc = q - q.mean(0)
    sc = skip - skip.mean(0)
    a = (qc ** 2).mean(0)
    b = 2 * (qc * sc).mean(0)
    c = (sc ** 2).mean(0) - y.var(0)
    s = (-b + np.sqrt(np.maximum(b * b - 4 * a * c, 0))) / (2 * a)
    P2 = P.copy()
    P2[:-1] *= s
    P2[-1] = P[-1] * s + (y - skip).mean(0) - q.mean(0) * s
    return P2


def varmatch_q(d, F, P):
    """Per-channel: the project's output variance = that of its target (original output - skip)."""
    q = aug(relu6(aug(d["train_X"]) @ F)) @ P
    t = d["train_Y"] - d["train_skip"]
    s = t.std(0) / q.std(0)
    P2 = P.copy()
    P2[:-1] *= s
    P2[-1] = P[-1] * s + t.mean(0) - q.mean(0) * s
    return P2


def _sqrtm(c, inverse=False):
    w, v = np.linalg.eigh(c)
    w = np.maximum(w, 1e-12 * w.max())
    return (v * (w ** (-0.5 if inverse else 0.5))) @ v.T


def covmatch(d, F, P):
    """Full covariance of the project output = its target's, closest to the target (Procrustes)."""
    q = (aug(relu6(aug(d["train_X"]) @ F)) @ P).astype(np.float64)
    t = (d["train_Y"] - d["train_skip"]).astype(np.float64)
    qc, tc = q - q.mean(0), t - t.mean(0)
    n = len(q)
    sp, st, spt = qc.T @ qc / n, tc.T @ tc / n, qc.T @ tc / n
    sp_ih, st_h = _sqrtm(sp, True), _sqrtm(st)
    u, _, vt = np.linalg.svd(sp_ih @ spt @ st_h)
    a = (st_h @ (u @ vt).T @ sp_ih)  # q_new = a @ q (column vectors)
    P2 = P.astype(np.float64).copy()
    P2[:-1] = P[:-1] @ a.T
    P2[-1] = (P[-1] - q.mean(0)) @ a.T + t.mean(0)
    return P2.astype(np.float32)


def with_varmatch(algo, fix=varmatch):
    def run(d):
        F, P = algo(d)
        return F, fix(d, F, P)
    return run


def algo_hidden_vm(d):
    """F fit, then each hidden pre-activation's variance scaled to the original's, then P lstsq."""
    F = fit_f_current(d)
    z = aug(d["train_X"]) @ F
    s = d["train_pre"].std(0) / z.std(0)
    F2 = F * s
    F2[-1] = F[-1] * s + z.mean(0) * (1 - s)
    return F2, fit_p(d, F2)


def algo_ridge(rf, rp, rows=None):
    def run(d):
        F = fit_f_current(d, ridge=rf, rows=rows)
        return F, fit_p(d, F, ridge=rp, rows=rows)
    return run


ALGOS = {"current": algo_current, "linear": algo_linear, "hvm": algo_hidden_vm, "hwopt": algo_hwopt}
for _rf in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
    for _rp in (1e-5, 1e-3, 1e-1):
        ALGOS[f"ridge{_rf:g}_{_rp:g}"] = algo_ridge(_rf, _rp)
for _rows in (4096, 8192, 16384):
    ALGOS[f"rows{_rows}"] = algo_ridge(1e-3, 1e-3, _rows)
for _it in (5, 10, 20, 30, 50):
    ALGOS[f"own{_it}"] = algo_own(_it)
    for _r in (4096, 8192, 16384):
        ALGOS[f"own{_it}r{_r}"] = algo_own(_it, _r)
for _name in list(ALGOS):
    ALGOS[_name + "_vm"] = with_varmatch(ALGOS[_name])
    ALGOS[_name + "_vq"] = with_varmatch(ALGOS[_name], varmatch_q)
    ALGOS[_name + "_cm"] = with_varmatch(ALGOS[_name], covmatch)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("cmd", choices=("collect", "eval", "pipeline"))
    parser.add_argument("algos", nargs="*")
    parser.add_argument("--upstream", default="original", choices=("original", "lstsq"))
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--eval-rows", type=int, default=256)
    parser.add_argument("--blocks", default=",".join(BLOCKS))
    args = parser.parse_args()
    if args.cmd == "collect":
        collect(args.upstream, args.rows, args.eval_rows)
        return 0
    if args.cmd == "pipeline":
        pipeline(args.algos, args.rows, args.eval_rows)
        return 0
    blocks = args.blocks.split(",")
    datas = {b: load(b, args.upstream, args.rows) for b in blocks}
    for algo in args.algos or list(ALGOS):
        cells = []
        for b in blocks:
            start = time.perf_counter()
            F, P = ALGOS[algo](datas[b])
            seconds = time.perf_counter() - start
            cos, rel = evaluate(datas[b], F, P)
            cells.append(f"{b} cos {cos:.4f} relL2 {rel:.3f} ({seconds:.1f}s)")
        print(f"{algo:24s} " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
