"""Recovery with labels: the task loss on the user's labelled data, beside distillation from the original.

Label-free recovery can only make the rewritten model imitate the original. With the task's labelled
data the rewritten architecture is retrained on the task itself (as one would train it from scratch,
but starting from hwopt's refit weights), and the original still teaches: the end-to-end loss is

    (1 - w) * distillation (softened KL on the logits, x T^2; relative MSE at the block outputs)
        + w * cross-entropy(student logits, labels)

with ``w = --label-weight`` (default 0.5). The distillation term carries the teacher's whole ranking
(what it finds similar), which a few thousand labels do not; the label term corrects the teacher's own
mistakes and what the narrower student cannot imitate. The block-wise phase is unchanged (it only
reconstructs tensors). Augmentation keeps labels valid: crops of 64-100% of the area, no mirror images
(a mirrored digit or letter is not the same class).

What is reported: top-1 accuracy against the labels on the held-out samples, for the original, the
rewritten model before recovery and after (``LabelledFigures``); the epoch written is the one with the
best accuracy on (up to 256) training samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hwopt.calibration.labels import accuracy

# Crop area with labels: 25% of a digit is often another digit (or none); the label-free range is 25-100%.
LABELLED_SCALE = (0.64, 1.0)


@dataclass(frozen=True)
class TaskLabels:
    """Class indices of the training and held-out samples (in the order of those sample sets)."""

    train: np.ndarray
    heldout: np.ndarray
    weight: float = 0.5  # of the cross-entropy in the end-to-end loss; 1 - weight for the distillation

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"label weight {self.weight} is not in [0, 1]")

    def batch(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        return torch.from_numpy(self.train[index.numpy()]).to(device)


@dataclass
class LabelledFigures:
    """Top-1 accuracy against the labels on the held-out samples."""

    original: float
    before: float
    after: float
    samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def task_loss(distillation: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, weight: float) -> torch.Tensor:
    """The end-to-end loss with labels (module docstring)."""
    return (1.0 - weight) * distillation + weight * F.cross_entropy(logits, labels)


def held_out_accuracy(scores: np.ndarray, labels: TaskLabels) -> float:
    return accuracy(scores, labels.heldout)
