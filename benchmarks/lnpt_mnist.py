"""LNPT on MNIST (CPU): label-free pruning + label-free training of LeNet-300-100 students.

1. A teacher LeNet-300-100 is trained with labels (cross-entropy, SGD) for a small budget.
2. Fresh students (one shared initialisation) are pruned at each sparsity with
   LNPT (teacher, unlabelled batches), SNIP (labelled batches) and random scores. All
   methods prune the same targets: ``lnpt_targets(model)`` (every Linear but the
   classifier, which stays dense), so the sparsities are comparable.
3. Every student is trained label-free with ``torch_prune_ext.training.distill``
   (KD + feature loss, SGD momentum 0.9, cosine LR); the learning gap, the weight distance
   and the test accuracy are recorded per epoch.

Usage::

    python benchmarks/lnpt_mnist.py                      # 30000 training images, ~100 s on a quiet core
    python benchmarks/lnpt_mnist.py --train-subset 60000 --student-epochs 10

Writes ``benchmarks/results/lnpt_mnist.csv`` (final numbers), ``lnpt_mnist_history.csv``
(per epoch), ``lnpt_mnist.md`` and ``lnpt_mnist.png`` (if matplotlib is installed).
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
import torch.nn.functional as F

import torch_prune_ext as tpe
from torch_prune_ext.data import mnist_tensors
from torch_prune_ext.methods.lnpt import LNPT, lnpt_targets
from torch_prune_ext.models import lenet_300_100
from torch_prune_ext.training import distill, learning_gap, plot_history
from torch_prune_ext.training.distill import MissingDependencyError, accuracy

RESULTS = Path(__file__).resolve().parent / "results"


def loader(x: torch.Tensor, y: torch.Tensor | None, batch: int, seed: int | None) -> list:
    """A list of batches (shuffled with ``seed``; labels dropped when ``y`` is None)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) if seed is not None \
        else torch.arange(len(x))
    out = []
    for i in range(0, len(x), batch):
        idx = order[i:i + batch]
        out.append(x[idx] if y is None else (x[idx], y[idx]))
    return out


def train_teacher(x, y, epochs: int, lr: float) -> torch.nn.Module:
    torch.manual_seed(0)
    teacher = lenet_300_100()
    opt = torch.optim.SGD(teacher.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for epoch in range(epochs):
        teacher.train()
        for xb, yb in loader(x, y, 128, seed=100 + epoch):
            opt.zero_grad()
            F.cross_entropy(teacher(xb), yb).backward()
            opt.step()
        sched.step()
    return teacher.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    parser.add_argument("--methods", nargs="+", default=["lnpt", "snip", "random"])
    parser.add_argument("--train-subset", type=int, default=30000,
                        help="training images used (teacher and students); MNIST has 60000")
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument("--student-epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--prune-batches", type=int, default=10, help="pruning batches of 100 images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-dense", action="store_true", help="skip the dense (0%% sparsity) student")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    start = time.perf_counter()
    x_all, y_all = mnist_tensors("train")
    x_test, y_test = mnist_tensors("test")
    pick = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))[:args.train_subset]
    x_train, y_train = x_all[pick], y_all[pick]
    test_batches = loader(x_test, y_test, 1000, seed=None)
    gap_batches = [b[0] for b in test_batches[:2]]  # 2000 test images, labels dropped

    teacher = train_teacher(x_train, y_train, args.teacher_epochs, 0.05)
    teacher_acc = accuracy(teacher, test_batches)
    teacher_seconds = time.perf_counter() - start
    print(f"teacher: {teacher_acc:.4f} test accuracy, {teacher_seconds:.1f} s", flush=True)

    prune_x = x_train[:100 * args.prune_batches]
    prune_y = y_train[:100 * args.prune_batches]
    unlabelled = loader(prune_x, None, 100, seed=None)
    labelled = loader(prune_x, prune_y, 100, seed=None)
    train_unlabelled = loader(x_train, None, 128, seed=1)  # the students never see a label

    rows, histories = [], {}
    runs = [("dense", 0.0)] if not args.no_dense else []
    runs += [(m, s) for s in args.sparsities for m in args.methods]
    for method, sparsity in runs:
        torch.manual_seed(1)
        student = lenet_300_100()  # the same initialisation for every run
        t0 = time.perf_counter()
        if method != "dense":
            targets = lnpt_targets(student)
            if method == "lnpt":
                tpe.global_prune(student, LNPT, sparsity, unlabelled, targets=targets, teacher=teacher,
                                 progress=False)
            elif method == "snip":
                tpe.global_prune(student, "snip", sparsity, labelled, targets=targets, progress=False)
            else:
                tpe.global_prune(student, method, sparsity, None, targets=targets, seed=0, progress=False)
        prune_seconds = time.perf_counter() - t0
        gap0 = learning_gap(student, teacher, gap_batches)
        t0 = time.perf_counter()
        history = distill(student, teacher, train_unlabelled, args.student_epochs, lr=args.lr,
                          eval_loader=test_batches, gap_loader=gap_batches, progress=False)
        train_seconds = time.perf_counter() - t0
        label = f"{method} {sparsity:.0%}"
        histories[label] = [{"epoch": 0, "learning_gap": gap0, "weight_distance": 0.0}] + history
        final = history[-1]
        rows.append({
            "method": method, "sparsity": sparsity, "test_accuracy": round(final["accuracy"], 4),
            "best_accuracy": round(max(h["accuracy"] for h in history), 4),
            "learning_gap_at_init": round(gap0, 4), "learning_gap_final": round(final["learning_gap"], 4),
            "weight_distance_final": round(final["weight_distance"], 3),
            "prune_seconds": round(prune_seconds, 2), "train_seconds": round(train_seconds, 1),
        })
        print(rows[-1], flush=True)

    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "lnpt_mnist.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(RESULTS / "lnpt_mnist_history.csv", "w", newline="") as f:
        keys = ["run", "epoch", "loss", "kd", "feat", "lr", "learning_gap", "weight_distance", "accuracy", "seconds"]
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for label, hist in histories.items():
            for rec in hist:
                writer.writerow({"run": label, **{k: (round(v, 5) if isinstance(v, float) else v)
                                                  for k, v in rec.items()}})
    plot_note = "lnpt_mnist.png: learning gap, weight distance and test accuracy per epoch for every run."
    try:
        plot_history(histories, str(RESULTS / "lnpt_mnist.png"))
    except MissingDependencyError:
        plot_note = "no plot: matplotlib is not installed."

    # correlation across runs between the final diagnostics and the final accuracy
    pruned = [r for r in rows if r["method"] != "dense"]

    def corr(key: str) -> float:
        a = torch.tensor([r[key] for r in pruned], dtype=torch.float64)
        b = torch.tensor([r["test_accuracy"] for r in pruned], dtype=torch.float64)
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if len(pruned) > 2 else float("nan")

    total = time.perf_counter() - start
    load_after = os.getloadavg()
    lines = [
        "# LNPT on MNIST: label-free pruning and training of LeNet-300-100",
        "",
        f"- command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`",
        f"- CPU, torch threads {args.threads}; torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.platform()}",
        f"- load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}; "
        f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (2 cores shared with other jobs)",
        f"- total time: {total:.0f} s",
        (f"- training set: all {len(x_train)} MNIST training images" if len(x_train) >= len(x_all) else
         f"- training set: a random subset of {len(x_train)} of the {len(x_all)} MNIST training images "
         "(subsampled to fit the CPU budget)") + "; test: all 10000 test images",
        f"- teacher: LeNet-300-100, {args.teacher_epochs} epochs cross-entropy WITH labels, SGD lr 0.05 "
        f"momentum 0.9 wd 5e-4 cosine, batch 128: test accuracy **{teacher_acc:.4f}** ({teacher_seconds:.0f} s)",
        f"- pruning: {args.prune_batches} batches of 100 training images; LNPT uses them unlabelled (teacher "
        "features, MSE), SNIP uses their labels, random uses none. Targets for all methods: the two hidden Linear "
        "layers (784x300, 300x100 = 265,200 weights); the 100x10 classifier stays dense (LNPT's default), "
        "so the sparsity is over the hidden layers.",
        f"- students: one shared fresh initialisation; trained label-free with "
        f"`torch_prune_ext.training.distill` for {args.student_epochs} epochs (loss 0.5·T²·KL + 0.5·MSE(φ_S, φ_T), "
        f"T = 4; SGD lr {args.lr} momentum 0.9 wd 5e-4 cosine, batch 128). No student ever sees a label.",
        "- learning gap: MSE between student and teacher penultimate features on 2000 test images (eval mode); "
        "weight distance: ‖θ − θ₀‖₂ of the effective weights from the pruned initialisation.",
        "- single seed, single run per cell: differences below ~0.3 points are within noise.",
        "",
        "| method | sparsity | test acc (final) | best epoch acc | gap at init | gap final | weight dist | prune s | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['sparsity']:.0%} | {r['test_accuracy']:.4f} | {r['best_accuracy']:.4f} | "
                     f"{r['learning_gap_at_init']:.4f} | {r['learning_gap_final']:.4f} | "
                     f"{r['weight_distance_final']:.2f} | {r['prune_seconds']:.2f} | {r['train_seconds']:.1f} |")
    lines += [
        "",
        f"Pearson correlation over the {len(pruned)} pruned runs, final value vs final test accuracy: "
        f"learning gap {corr('learning_gap_final'):+.3f}, weight distance {corr('weight_distance_final'):+.3f} "
        "(the paper's claim is that the gap tracks accuracy, i.e. a strongly negative correlation).",
        "",
        plot_note,
        "Per-epoch values: lnpt_mnist_history.csv.",
    ]
    (RESULTS / "lnpt_mnist.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
