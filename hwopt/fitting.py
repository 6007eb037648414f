"""Least-squares fitting of conv and dense weights from calibration tensors.

A conv is linear in its weights: every output pixel is a dot product of one
input patch (im2col row) with the filter. So fitting a conv to produce given
outputs from given inputs is linear least squares over patches. We accumulate
the normal equations batch by batch (float64), so any number of calibration
samples fits in memory, and solve once with a ridge term that pulls the
solution toward an initial guess (scaled to the data so one ``ridge`` value
works for every layer).
"""

from __future__ import annotations

import numpy as np

# Patches drawn per update: plenty for a few hundred unknowns per output channel,
# and it keeps a 512-sample calibration of a 112x112 layer to seconds.
_MAX_ROWS_PER_UPDATE = 8192


class ConvLeastSquares:
    """Accumulates ``y ~ conv(x, W) + b`` normal equations; ``solve`` returns (W, b)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        strides: tuple[int, int] = (1, 1),
        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
        dilations: tuple[int, int] = (1, 1),
        seed: int = 0,
        max_rows: int = _MAX_ROWS_PER_UPDATE,
    ) -> None:
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel = tuple(kernel)
        self.strides = tuple(strides)
        self.pads = tuple(pads)
        self.dilations = tuple(dilations)
        self.max_rows = max_rows
        self.rng = np.random.default_rng(seed)
        features = in_channels * self.kernel[0] * self.kernel[1] + 1  # + bias column
        self.xtx = np.zeros((features, features), dtype=np.float64)
        self.xty = np.zeros((features, out_channels), dtype=np.float64)
        self.rows = 0

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
        if total > self.max_rows:
            flat = np.sort(self.rng.choice(total, self.max_rows, replace=False))
        else:
            flat = np.arange(total)
        n, rest = np.divmod(flat, ho * wo)
        i, j = np.divmod(rest, wo)
        rows = windows[n, :, i, j]  # (R, C, kh, kw)
        return rows.reshape(len(flat), -1), np.stack([n, i, j])

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add a batch: ``x`` (N, Cin, H, W) inputs, ``y`` (N, Cout, Ho, Wo) wanted outputs."""
        rows, (n, i, j) = self._patches(x, (y.shape[2], y.shape[3]))
        targets = y[n, :, i, j]  # (R, Cout)
        self._accumulate(rows, targets)

    def update_rows(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add a batch of a dense layer: ``x`` (N, K), ``y`` (N, M)."""
        self._accumulate(x, y)

    def _accumulate(self, rows: np.ndarray, targets: np.ndarray) -> None:
        design = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.float64)
        design[:, :-1] = rows
        design[:, -1] = 1.0
        self.xtx += design.T @ design
        self.xty += design.T @ targets.astype(np.float64)
        self.rows += rows.shape[0]

    def solve(self, w0: np.ndarray, b0: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """Weights minimising ||X theta - Y||^2 + ridge * scale * ||theta - theta0||^2."""
        out_channels = w0.shape[0]
        theta0 = np.concatenate([w0.reshape(out_channels, -1).T, b0.reshape(1, -1)], axis=0).astype(np.float64)
        if theta0.shape != self.xty.shape:
            raise ValueError(f"initial weights {w0.shape} do not match the fit ({self.xty.shape})")
        if self.rows == 0:
            return w0.astype(np.float32), b0.astype(np.float32)
        scale = float(np.trace(self.xtx)) / self.xtx.shape[0] or 1.0
        lhs = self.xtx + ridge * scale * np.eye(self.xtx.shape[0])
        rhs = self.xty + ridge * scale * theta0
        try:
            theta = np.linalg.solve(lhs, rhs)
        except np.linalg.LinAlgError:
            theta = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        weight = theta[:-1].T.reshape(w0.shape).astype(np.float32)
        bias = theta[-1].astype(np.float32)
        return weight, bias


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
