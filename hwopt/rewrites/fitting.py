"""Least-squares fitting of conv and dense weights from calibration tensors.

A conv is linear in its weights: every output pixel is a dot product of one
input patch (im2col row) with the filter, so fitting a conv to produce given
outputs from given inputs is linear least squares over patches. The fitter
keeps a seeded sample of patches (a row budget that shrinks as the number of
unknowns grows, so a solve stays a few seconds on two cores) and solves with a
ridge term that pulls the solution toward an initial guess, scaled to the data
so one ``ridge`` value works for every layer.

When the fitted output feeds a clipping activation (ReLU, ReLU6, Clip), only
the activation's output matters: a target below the lower bound is met by
any prediction below it too. ``solve(clip=...)`` then refines the plain
solution by a few rounds of least squares on targets moved onto the
predictions wherever both are clipped alike (a majorize-minimize scheme for
the clipped loss).

A least-squares prediction regresses toward the mean: its variance is the
target's times the explained fraction (R^2). Layers downstream were
calibrated (BatchNorm) on the original's statistics, and an input with too
little spread shifts every later activation's mean. ``solve(match_variance=True)``
then rescales each output channel about its mean so that its variance on the
fitted rows is the target's (mean kept): a little more squared error here, the
second moments the rest of the network expects. On the MobileNetV2 example's
fuse-ibn refit the final output's cosine similarity goes from 0.88 to 0.94.

A conv fitted per output channel to a hidden layer's targets is not the best
choice for what comes after it: when a 1x1 conv reads the (clipped) hidden
layer, only the combination matters. ``refine_through_linear`` (rows kept
with ``update(..., aux=)``) refines the conv jointly with a least-squares
1x1 conv so that the pair reproduces the auxiliary targets: a few L-BFGS
steps on the exact two-layer loss, from the per-channel solution.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

# Row budget ~ this many multiply-adds for the normal equations (rows x features^2).
_NORMAL_EQUATION_MACS = 1.5e10
_MIN_ROWS, _MAX_ROWS = 2048, 32768
_CLIP_ROUNDS = 4
# Variance matching never scales a channel up by more than this (a near-constant prediction is noise).
_MAX_VARIANCE_GAIN = 2.0
# Joint refinement: at most this many L-BFGS steps, within a budget of rows x features x hidden
# multiply-adds summed over steps (each step costs about 3 such products: ~1 s on one core at the cap),
# and only with at least this many target values (rows x outputs) per free parameter (else it overfits).
_JOINT_ITERATIONS = 20
_MIN_JOINT_ITERATIONS = 3
_JOINT_MACS = 1e10
_JOINT_DATA_PER_PARAM = 10
_LBFGS_MEMORY = 10


def row_budget(features: int) -> int:
    return int(np.clip(_NORMAL_EQUATION_MACS / features**2, _MIN_ROWS, _MAX_ROWS))


class ConvLeastSquares:
    """Collects (patch, target) rows of ``y ~ conv(x, W) + b``; ``solve`` returns (W, b)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        strides: tuple[int, int] = (1, 1),
        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
        dilations: tuple[int, int] = (1, 1),
        seed: int = 0,
        samples: int = 64,
    ) -> None:
        """``samples``: how many calibration samples will be fed (spreads the row budget over them)."""
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel = tuple(kernel)
        self.strides = tuple(strides)
        self.pads = tuple(pads)
        self.dilations = tuple(dilations)
        self.rng = np.random.default_rng(seed)
        self.features = in_channels * self.kernel[0] * self.kernel[1]
        self.rows_per_sample = max(1, -(-row_budget(self.features + 1) // max(samples, 1)))
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._aux: list[np.ndarray] = []

    @property
    def rows(self) -> int:
        return sum(len(x) for x in self._x)

    @property
    def design(self) -> np.ndarray:
        """The kept rows: patches with a last column of ones, (rows, features + 1)."""
        return np.concatenate(self._x) if self._x else np.empty((0, self.features + 1), np.float32)

    @property
    def aux(self) -> np.ndarray | None:
        """The aux targets kept with the rows (``update(..., aux=)``), or None."""
        return np.concatenate(self._aux) if self._aux else None

    def _patches(self, x: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Sampled im2col rows of ``x`` and the (n, i, j) output positions they belong to."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        top, left, bottom, right = self.pads
        padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        windows = np.lib.stride_tricks.sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
        windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]
        ho, wo = out_hw
        if windows.shape[2] < ho or windows.shape[3] < wo:
            raise ValueError(f"conv geometry gives {windows.shape[2:4]} outputs, targets have {out_hw}")
        total = x.shape[0] * ho * wo
        wanted = self.rows_per_sample * x.shape[0]
        flat = np.sort(self.rng.choice(total, wanted, replace=False)) if total > wanted else np.arange(total)
        n, rest = np.divmod(flat, ho * wo)
        i, j = np.divmod(rest, wo)
        rows = windows[n, :, i, j]  # (R, C, kh, kw)
        return rows.reshape(len(flat), -1), np.stack([n, i, j])

    def update(self, x: np.ndarray, y: np.ndarray, aux: np.ndarray | None = None) -> None:
        """Add a batch: ``x`` (N, Cin, H, W) inputs, ``y`` (N, Cout, Ho, Wo) wanted outputs.

        ``aux`` (N, C, Ho, Wo): targets of a 1x1 conv after this one, kept at the same positions
        (for ``refine_through_linear``).
        """
        rows, (n, i, j) = self._patches(x, (y.shape[2], y.shape[3]))
        self._add(rows, y[n, :, i, j])
        if aux is not None:
            self._aux.append(np.asarray(aux[n, :, i, j], dtype=np.float32))

    def update_rows(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add a batch of a dense layer: ``x`` (N, K), ``y`` (N, M) (one row per sample: all kept)."""
        self._add(x, y)

    def _add(self, rows: np.ndarray, targets: np.ndarray) -> None:
        design = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.float32)
        design[:, :-1] = rows
        design[:, -1] = 1.0
        self._x.append(design)
        self._y.append(np.asarray(targets, dtype=np.float32))

    def solve(
        self,
        w0: np.ndarray,
        b0: np.ndarray,
        ridge: float = 1e-3,
        clip: tuple[float, float] | None = None,
        match_variance: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Weights minimising ||X theta - Y||^2 + ridge * scale * ||theta - theta0||^2.

        ``clip=(low, high)``: the loss is taken after clipping predictions and targets to that range.
        ``match_variance``: then scale each output about its mean to the target's variance (not with ``clip``).
        """
        if clip is not None and match_variance:
            raise ValueError("match_variance is for unclipped outputs")
        out_channels = w0.shape[0]
        theta0 = np.concatenate([w0.reshape(out_channels, -1).T, b0.reshape(1, -1)], axis=0).astype(np.float64)
        if theta0.shape != (self.features + 1, self.out_channels):
            raise ValueError(f"initial weights {w0.shape} do not match the fit ({self.features + 1} features)")
        if not self._x:
            return w0.astype(np.float32), b0.astype(np.float32)
        x = np.concatenate(self._x)
        y = np.concatenate(self._y)
        xtx = (x.T @ x).astype(np.float64)
        scale = float(np.trace(xtx)) / xtx.shape[0] or 1.0
        lhs = xtx + ridge * scale * np.eye(xtx.shape[0])
        prior = ridge * scale * theta0
        # One factorisation serves every refinement round (only the right-hand side changes).
        solve = _solver(lhs)
        theta = solve((x.T @ y).astype(np.float64) + prior)
        if clip is not None:
            low, high = clip
            for _ in range(_CLIP_ROUNDS):
                pred = x @ theta.astype(np.float32)
                # Where prediction and target are clipped to the same bound, the clipped loss is zero:
                # move the target onto the prediction so that row stops pulling.
                free = ((y <= low) & (pred <= low)) | ((y >= high) & (pred >= high))
                target = np.where(free, pred, y)
                theta = solve((x.T @ target).astype(np.float64) + prior)
        if match_variance:
            theta = _match_variance(theta, x, y)
        weight = theta[:-1].T.reshape(w0.shape).astype(np.float32)
        bias = theta[-1].astype(np.float32)
        return weight, bias

    def refine_through_linear(
        self, weight: np.ndarray, bias: np.ndarray, clip: tuple[float, float], iterations: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(weight, bias) refined jointly with a 1x1 conv on clip(conv) toward the ``aux`` targets.

        ``iterations``: L-BFGS steps; by default as many as the cost budget allows (``joint_iterations``),
        none when the rows are too few for the parameters (the weights then come back unchanged).
        """
        if not self._aux or len(self._aux) != len(self._x):
            raise ValueError("refine_through_linear needs aux targets with every update")
        design, aux = self.design, self.aux
        if iterations is None:
            iterations = joint_iterations(len(design), design.shape[1], len(weight), aux.shape[1])
        if iterations <= 0:
            return weight, bias
        theta = np.concatenate([weight.reshape(len(weight), -1).T, bias.reshape(1, -1)], axis=0)
        theta = refine_hidden_layer(design, aux, theta, clip, iterations)
        return theta[:-1].T.reshape(weight.shape).copy(), theta[-1].copy()


def _match_variance(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``theta`` (features + bias row, outputs) with each output's variance over rows ``x`` that of ``y``."""
    pred = x @ theta.astype(np.float32)
    pred_mean, pred_std = pred.mean(axis=0, dtype=np.float64), pred.std(axis=0, dtype=np.float64)
    target_std = y.std(axis=0, dtype=np.float64)
    gain = np.where(pred_std > 0, target_std / np.where(pred_std > 0, pred_std, 1.0), 1.0)
    gain = np.clip(gain, 0.0, _MAX_VARIANCE_GAIN)
    scaled = theta * gain
    # pred' = mean + gain * (pred - mean): the bias row absorbs the shift.
    scaled[-1] += pred_mean * (1.0 - gain)
    return scaled


def joint_iterations(rows: int, features: int, hidden: int, outputs: int) -> int:
    """L-BFGS steps for a joint refinement of this size: 0 when too costly or too few rows to be safe."""
    params = features * hidden + (hidden + 1) * outputs
    if rows * outputs < _JOINT_DATA_PER_PARAM * params:
        return 0
    steps = min(_JOINT_ITERATIONS, int(_JOINT_MACS // max(rows * features * hidden, 1)))
    return steps if steps >= _MIN_JOINT_ITERATIONS else 0


def refine_hidden_layer(
    design: np.ndarray, targets: np.ndarray, theta: np.ndarray, clip: tuple[float, float],
    iterations: int = _JOINT_ITERATIONS, ridge: float = 1e-3,
) -> np.ndarray:
    """``theta`` (features + bias row, hidden) refined so that ``clip(design @ theta) @ P + c ~ targets``.

    ``design`` (rows, features + 1) ends with a column of ones. P and c start as the ridge least-squares
    fit for the given ``theta``; then both move by L-BFGS on the mean squared error (float32, deterministic).
    Returns the refined ``theta`` only: the caller refits the 1x1 conv from the model's own activations.
    """
    low, high = clip
    design = np.asarray(design, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    theta = np.asarray(theta, dtype=np.float32)
    hidden = np.clip(design @ theta, low, high)
    hidden_design = np.concatenate([hidden, np.ones((len(hidden), 1), np.float32)], axis=1)
    gram = (hidden_design.T @ hidden_design).astype(np.float64)
    scale = float(np.trace(gram)) / len(gram) or 1.0
    project = _solver(gram + ridge * scale * np.eye(len(gram)))((hidden_design.T @ targets).astype(np.float64))
    project = project.astype(np.float32)
    norm = float(np.square(targets, dtype=np.float64).sum()) or 1.0
    split = theta.size

    def loss_and_gradient(v: np.ndarray) -> tuple[float, np.ndarray]:
        t, p = v[:split].reshape(theta.shape), v[split:].reshape(project.shape)
        z = design @ t
        h = np.clip(z, low, high)
        err = h @ p[:-1] + p[-1] - targets
        grad_p = np.concatenate([h.T @ err, err.sum(axis=0, keepdims=True)])
        grad_t = design.T @ ((err @ p[:-1].T) * ((z > low) & (z < high)))
        grad = np.concatenate([grad_t.ravel(), grad_p.ravel()]) * np.float32(2.0 / norm)
        return float(np.square(err, dtype=np.float64).sum()) / norm, grad

    def in_float32(v: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = loss_and_gradient(v.astype(np.float32))  # scipy works in float64; the data stays float32
        return loss, grad.astype(np.float64)

    start = np.concatenate([theta.ravel(), project.ravel()]).astype(np.float64)
    result = minimize(in_float32, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": iterations, "maxcor": _LBFGS_MEMORY})
    # Every accepted L-BFGS-B step lowers the loss (Wolfe line search): never worse than the start.
    return result.x[:split].reshape(theta.shape).astype(np.float32)


def _solver(lhs: np.ndarray):
    """rhs -> lhs^-1 rhs for a symmetric positive (semi-)definite ``lhs``, factorised once."""
    try:
        inverse = np.linalg.inv(lhs)
    except np.linalg.LinAlgError:
        inverse = np.linalg.pinv(lhs, hermitian=True)
    return lambda rhs: inverse @ rhs


def linear_fusion_init(
    expand_w: np.ndarray, expand_b: np.ndarray, dw_w: np.ndarray, dw_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The KxK conv equal to depthwise(expand(x)) if the activation between them were the identity.

    ``expand_w`` (H, Cin, 1, 1), ``dw_w`` (H, 1, k, k): W[h, c] = dw_w[h] * expand_w[h, c] and the
    expand bias passes through the depthwise filter's sum (exact away from the zero-padded border).
    """
    weight = dw_w[:, 0][:, None, :, :] * expand_w[:, :, 0, 0][:, :, None, None]
    bias = dw_b + expand_b * dw_w[:, 0].sum(axis=(1, 2))
    return weight.astype(np.float32), bias.astype(np.float32)
