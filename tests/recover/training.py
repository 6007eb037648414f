"""Training the small classifiers the recovery tests start from (real torch training, a few seconds)."""

from __future__ import annotations

import numpy as np
import torch


def fit_classifier(net: torch.nn.Module, images: np.ndarray, labels: np.ndarray, steps: int, lr: float,
                   batch: int = 64, one_cycle: bool = False) -> torch.nn.Module:
    """Adam on cross-entropy, ``steps`` random batches (torch's global seed), optionally a one-cycle schedule;
    returns ``net`` in eval mode."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps) if one_cycle else None
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    net.train()
    for _ in range(steps):
        index = torch.randint(0, len(x), (batch,))
        loss = torch.nn.functional.cross_entropy(net(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
    return net.eval()
