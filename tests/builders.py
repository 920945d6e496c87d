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


class PXConformanceNet(nn.Module):
    """Small conv net for the PX conformance fixtures (``tests/fixtures/PX_FIXTURES.md``).

    ``bn=True``: conv-BN-ReLU stem (``conv1``/``bn1``), a stride-2 block (``conv2``/``bn2``/``conv3``/``bn3``)
    with a projection shortcut ``shortcut = Sequential(conv, BN)`` (its BN is ``shortcut.1``: no "bn" in
    its name), a flatten head ``fc``. ``bn=False``: conv-ReLU, conv-ReLU, max-pool, conv-ReLU, flatten head
    ``linear``; every conv has a bias. Every ReLU is its own ``nn.ReLU`` module. Input ``(N, 3, 8, 8)``.
    """

    def __init__(self, bn: bool) -> None:
        super().__init__()
        self.bn = bn
        if bn:
            self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
            self.relu1 = nn.ReLU()
            self.conv2, self.bn2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6)
            self.relu2 = nn.ReLU()
            self.conv3, self.bn3 = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
            self.shortcut = nn.Sequential(nn.Conv2d(4, 6, 1, stride=2, bias=False), nn.BatchNorm2d(6))
            self.relu3 = nn.ReLU()
            self.fc = nn.Linear(6 * 4 * 4, 5)
        else:
            self.conv1, self.relu1 = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
            self.conv2, self.relu2 = nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.conv3, self.relu3 = nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()
            self.linear = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.bn:
            h = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
            return self.linear(self.relu3(self.conv3(h)).flatten(1))
        h = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.relu2(self.bn2(self.conv2(h)))))
        return self.fc(self.relu3(out + self.shortcut(h)).flatten(1))


def px_conformance_net(bn: bool, seed: int = 0, density: float = 0.7) -> PXConformanceNet:
    """:class:`PXConformanceNet` built after ``torch.manual_seed(seed)`` (the global RNG is restored),
    BatchNorm affine parameters and running statistics drawn away from their defaults, and every Conv/Linear
    weight pruned with ``torch.nn.utils.prune.custom_from_mask`` to a random mask of about ``density``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = PXConformanceNet(bn)
        generator = torch.Generator().manual_seed(seed + 1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                with torch.no_grad():
                    module.weight.uniform_(0.5, 1.5, generator=generator)
                    module.bias.uniform_(-0.5, 0.5, generator=generator)
                    module.running_mean.uniform_(-0.3, 0.3, generator=generator)
                    module.running_var.uniform_(0.5, 2.0, generator=generator)
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                mask = (torch.rand(module.weight.shape, generator=generator) < density).float()
                prune.custom_from_mask(module, "weight", mask)
    return model


def px_conformance_batches(seed: int = 0, batches: int = 2, size: int = 6) -> list[torch.Tensor]:
    """``batches`` seeded standard-normal inputs of shape ``(size, 3, 8, 8)`` for :class:`PXConformanceNet`."""
    generator = torch.Generator().manual_seed(1000 + seed)
    return [torch.randn(size, 3, 8, 8, generator=generator) for _ in range(batches)]


def load_benchmark(name: str):
    """A fresh module object of ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
