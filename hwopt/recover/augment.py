"""Augmenting preprocessed image tensors: random resized crops and horizontal flips.

Distillation needs no labels, so any view of a calibration image is a new
training sample: the teacher says what the student must output for it. The
crops are done on the model-ready tensors (already normalised), as one
batched affine resampling, so they work for any preprocessing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Crop area as a fraction of the image, and aspect ratio range: milder than ImageNet training's
# 0.08-1 because the student must match the teacher on views like the deployment images.
SCALE = (0.25, 1.0)
RATIO = (3 / 4, 4 / 3)


def is_image(shape: tuple[int, ...]) -> bool:
    """An NCHW tensor with a spatial extent worth cropping."""
    return len(shape) == 4 and min(shape[2:]) >= 16


def crop_and_flip(x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = SCALE,
                  mirror: bool = True) -> torch.Tensor:
    """Each sample of ``x`` (N, C, H, W): a random crop (area in ``scale``, aspect in RATIO) resized back
    to H x W, mirrored with probability 1/2 (``mirror``; the draw is made either way, so the crops of a
    seed do not depend on it)."""
    n = x.shape[0]
    uniform = lambda: torch.rand(n, generator=generator)  # noqa: E731 - one draw per sample
    area = scale[0] + (scale[1] - scale[0]) * uniform()
    log_ratio = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * uniform()
    ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * ratio).clamp(max=1.0)
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    # Normalised coordinates span [-1, 1]: a crop of relative size s can move by +-(1 - s).
    shift_x = (2 * uniform() - 1) * (1 - width)
    shift_y = (2 * uniform() - 1) * (1 - height)
    flip = torch.where((uniform() < 0.5) & mirror, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = shift_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = shift_y
    grid = F.affine_grid(theta.to(x.dtype).to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
