"""Small models shared by several test modules."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def bn_model(prepruned: bool) -> nn.Sequential:
    """Conv-BN-ReLU-Linear net with non-default BN statistics (a reset would show); the global RNG is untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5),
                              nn.ReLU(), nn.Linear(5, 3))
        with torch.no_grad():
            model[1].running_mean.uniform_(-1, 1)
            model[1].running_var.uniform_(0.5, 2)
            model[1].num_batches_tracked.fill_(3)
        if prepruned:
            prune.random_unstructured(model[0], "weight", amount=0.5)
            prune.l1_unstructured(model[4], "weight", amount=0.25)
    return model


def relu_mlp(sizes: tuple[int, ...], seed: int = 0, bn: bool = False, dropout: float | None = None) -> nn.Sequential:
    """Linear layers of ``sizes`` with ReLU between them (BatchNorm1d before each ReLU with ``bn``,
    Dropout after it with ``dropout``), built right after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            if bn:
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
            layers.append(nn.ReLU())
            if dropout is not None:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
