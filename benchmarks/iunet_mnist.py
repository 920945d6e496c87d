"""IUNET on MNIST (CPU, small budget): dense MLP vs IUNET vs its ablations.

Four runs of :func:`torch_prune_ext.iunet.run_iunet` on the same MLP supernetwork
(one shared seed, so the same θ†):

* ``dense``: κ = 1, no NT-Xent, no pruning, trained ``epochs + finetune_epochs`` epochs;
* ``iunet``: κ = 0.125, ILO (λ = 1, τ = 0.5), encoder pruned to ``--sparsity``, rewound to θ†, finetuned;
* ``iunet_no_prune``: κ = 0.125 + ILO, not pruned, trained ``epochs + finetune_epochs`` epochs;
* ``magnitude_no_ilo``: κ = 1, plain CE, same pruning/rewind/finetune as IUNET (one-shot LTH).

Reported: test accuracy and translation consistency (the share of test images whose
prediction is unchanged under a random shift of up to 2 pixels, zero padded).

Deviations for MNIST (said in the report): horizontal flips are off (``--flip-p 0``; a mirrored
digit is another symbol) in both the CE branch and the contrastive views, and the resized-crop
scale is (0.25, 1) instead of SimCLR's (0.08, 1) on 28x28 digits. The whole run is subsampled
(``--train-subset``, ``--test-subset``) to stay under ~8 minutes on one busy CPU thread.

Usage::

    python benchmarks/iunet_mnist.py                       # defaults: 20000 train / 5000 test images, 8+8 epochs
    python benchmarks/iunet_mnist.py --train-subset 60000 --epochs 20 --finetune-epochs 20

Writes ``benchmarks/results/iunet_mnist.csv``, ``iunet_mnist.md`` and ``iunet_mnist.png``
(first-layer connectivity; needs matplotlib).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

from torch_prune_ext.data import (
    MNIST_MEAN,
    MNIST_STD,
    mnist_tensors,
    normalize,
    random_crop,
)
from torch_prune_ext.iunet import IUNETConfig, StandardAugment, VisionViews, run_iunet
from torch_prune_ext.models import mlp

RESULTS = Path(__file__).resolve().parent / "results"


class Standardize(nn.Module):
    """Normalise [0, 1] MNIST pixels inside the model, so augmentations work on [0, 1] images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, (MNIST_MEAN,), (MNIST_STD,))


def build(hidden: tuple[int, ...]) -> nn.Module:
    return nn.Sequential(Standardize(), mlp(784, hidden, 10))


def subset(x: torch.Tensor, y: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n >= x.shape[0]:
        return x, y
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def first_layer(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(effective weight, mask) of the first Linear."""
    layer = next(m for m in model.modules() if isinstance(m, nn.Linear))
    mask = getattr(layer, "weight_mask", torch.ones_like(layer.weight))
    weight = getattr(layer, "weight_orig", layer.weight) * mask
    return weight.detach(), mask.detach()


def plot(models: dict[str, nn.Module], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pruned = {k: m for k, m in models.items() if hasattr(next(l for l in m.modules() if isinstance(l, nn.Linear)),
                                                          "weight_mask")}
    n_units = 4
    fig, axes = plt.subplots(len(pruned), 1 + n_units, figsize=(2.4 * (1 + n_units), 2.6 * len(pruned)), squeeze=False)
    for row, (name, model) in enumerate(pruned.items()):
        weight, mask = first_layer(model)
        count = mask.sum(0).reshape(28, 28)
        im = axes[row, 0].imshow(count, cmap="viridis")
        axes[row, 0].set_title(f"{name}\nsurviving weights / pixel", fontsize=8)
        fig.colorbar(im, ax=axes[row, 0], fraction=0.046)
        degree = mask.sum(1)
        units = torch.argsort(degree, descending=True, stable=True)[:n_units]
        for j, u in enumerate(units.tolist()):
            rf = weight[u].reshape(28, 28)
            lim = float(rf.abs().max()) or 1.0
            axes[row, 1 + j].imshow(rf, cmap="bwr", vmin=-lim, vmax=lim)
            axes[row, 1 + j].set_title(f"unit {u}: {int(degree[u])} inputs", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-subset", type=int, default=20000)
    p.add_argument("--test-subset", type=int, default=5000)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--epochs", type=int, default=8, help="ILO epochs (IUNET stage 3)")
    p.add_argument("--finetune-epochs", type=int, default=8)
    p.add_argument("--sparsity", type=float, default=0.9, help="encoder sparsity")
    p.add_argument("--kappa", type=float, default=0.125)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--flip-p", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=["dense", "iunet", "iunet_no_prune", "magnitude_no_ilo"])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default="", help="suffix of the output names (iunet_mnist<tag>.csv/.md/.png)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/iunet_mnist.py", *(argv or sys.argv[1:])])
    load_before = os.getloadavg()

    x_train, y_train = subset(*mnist_tensors("train", normalize=False), args.train_subset, args.seed)
    x_test, y_test = subset(*mnist_tensors("test", normalize=False), args.test_subset, args.seed + 1)
    hidden = tuple(args.hidden)
    total_epochs = args.epochs + args.finetune_epochs
    def shift(batch: torch.Tensor) -> torch.Tensor:
        """Random shift by up to 2 pixels, re-seeded per call: every stage and variant sees the same shifts."""
        return random_crop(batch, (28, 28), 2, generator=torch.Generator().manual_seed(123))

    views = VisionViews(scale=(0.25, 1.0), flip_p=args.flip_p, generator=torch.Generator().manual_seed(args.seed + 7))
    standard = StandardAugment(padding=2, flip_p=args.flip_p, generator=torch.Generator().manual_seed(args.seed + 8))
    common = dict(lr=args.lr, batch_size=args.batch_size, seed=args.seed, progress=args.progress,
                  views=views, standard_augment=standard, consistency_transform=shift)
    variants = {
        "dense": IUNETConfig(kappa=1.0, ilo_weight=0.0, sparsity=0.0, epochs=total_epochs, **common),
        "iunet": IUNETConfig(kappa=args.kappa, ilo_weight=1.0, sparsity=args.sparsity, epochs=args.epochs,
                             finetune_epochs=args.finetune_epochs, **common),
        "iunet_no_prune": IUNETConfig(kappa=args.kappa, ilo_weight=1.0, sparsity=0.0, epochs=total_epochs, **common),
        "magnitude_no_ilo": IUNETConfig(kappa=1.0, ilo_weight=0.0, sparsity=args.sparsity, epochs=args.epochs,
                                        finetune_epochs=args.finetune_epochs, **common),
    }
    rows, models, tables = [], {}, []
    start = time.perf_counter()
    for name in args.variants:
        cfg = variants[name]
        report = run_iunet(lambda: build(hidden), (x_train, y_train), (x_test, y_test), cfg)
        models[name] = report.model
        tables.append(f"### {name}\n\n```\n{report}\n```\n")
        ilo = report.stage("ilo")
        rows.append({
            "variant": name, "kappa": cfg.kappa, "ilo_weight": cfg.ilo_weight, "encoder_sparsity": report.encoder_sparsity,
            "total_sparsity": report.total_sparsity, "test_acc": report.final_accuracy,
            "consistency": report.final_consistency, "supernet_acc": ilo.test_accuracy,
            "supernet_consistency": ilo.consistency, "seconds": report.total_seconds,
        })
        sys.stderr.write(f"{name}: acc {report.final_accuracy:.4f} consistency {report.final_consistency:.4f} "
                         f"({report.total_seconds:.0f} s)\n")
    wall = time.perf_counter() - start
    load_after = os.getloadavg()

    with open(args.out / f"iunet_mnist{args.tag}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    png = plot(models, args.out / f"iunet_mnist{args.tag}.png")
    lines = [
        "# IUNET on MNIST (CPU, subsampled)", "",
        f"Command: `{command}`  ",
        f"torch {torch.__version__}, {platform.machine()}, torch.set_num_threads({args.threads}); "
        f"load average before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (2 shared cores); wall {wall:.0f} s.", "",
        f"Data: {x_train.shape[0]} training / {x_test.shape[0]} test images (random subsets, seed {args.seed}) "
        "to keep the run under ~8 minutes; MLP 784-" + "-".join(map(str, hidden)) + "-10 (ReLU, no BN), Adam "
        f"lr {args.lr}, batch {args.batch_size}. IUNET: {args.epochs} ILO epochs + {args.finetune_epochs} finetune "
        f"epochs; unpruned variants train {total_epochs} epochs. Encoder sparsity {args.sparsity} (head dense). "
        f"Flip probability {args.flip_p} (digits), resized-crop scale (0.25, 1).", "",
        "Consistency = share of test images whose predicted class is unchanged under a random shift of up to "
        "2 pixels (zero padded).", "",
        "| variant | κ | λ | encoder sparsity | test acc % | consistency % | supernet acc % (before pruning) | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['kappa']} | {r['ilo_weight']} | {100 * r['encoder_sparsity']:.1f}% | "
                     f"{100 * r['test_acc']:.2f} | {100 * r['consistency']:.2f} | {100 * r['supernet_acc']:.2f} | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "Single seed, small subset and few epochs: differences of a few tenths of a percent are noise.", ""]
    if png:
        lines += [f"![first-layer connectivity](iunet_mnist{args.tag}.png)", "",
                  "Left: surviving first-layer weights per input pixel; right: the first-layer weights of the "
                  "four hidden units with the most surviving inputs.", ""]
    lines += ["## Per-stage reports", "", *tables]
    (args.out / f"iunet_mnist{args.tag}.md").write_text("\n".join(lines))
    sys.stderr.write(f"wrote {args.out}/iunet_mnist{args.tag}.csv, .md{', .png' if png else ''} in {wall:.0f} s\n")


if __name__ == "__main__":
    main()
