"""Distillation losses: what the student is trained to reproduce of the teacher.

- Class scores (rank 2, at least 10 classes, as ``hwopt.fidelity.verify`` judges them):
  KL divergence between the temperature-softened softmaxes, times T^2 (Hinton
  et al.), which weighs the whole ranking the teacher gives, not only its top-1.
- Any other output, and a block's output tensor: mean squared error divided
  by the teacher tensor's variance, so that every block and output weighs
  alike whatever its scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_CLASSES = 10


def is_class_scores(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and shape[-1] >= MIN_CLASSES


def relative_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher) / teacher.var().clamp(min=1e-12)


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), log_target=True,
                    reduction="batchmean") * t * t


def output_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    if is_class_scores(tuple(teacher.shape)):
        return soft_kl(student, teacher, temperature)
    return relative_mse(student, teacher)
