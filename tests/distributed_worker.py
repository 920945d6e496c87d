"""One rank of the distributed-scoring tests (``tests/test_distributed.py``).

Launched the documented way, ``python -m torch.distributed.run --standalone --nproc_per_node=2
tests/distributed_worker.py OUT``; every rank saves what it computed to ``OUT/rank<r>.pt``, and
the test compares it with one process on all the data. The model, the data and every case are
built here so that both sides build the same ones.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import torch_prune_ext as tpe

WORLD_SIZE = 2
INPUT_SHAPE = (3, 6, 6)


def build_model(seed: int = 0) -> nn.Module:
    """A small float64 conv net with BatchNorm, max-pooling and a classifier."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 3 * 3, 5),
    ).double()


def all_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four labelled batches of unequal sizes: all the pruning data of one process."""
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(n, *INPUT_SHAPE, generator=generator, dtype=torch.float64),
             torch.randint(0, 5, (n,), generator=generator)) for n in (6, 5, 6, 4)]


def rank_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank ``rank``'s own shard: consecutive batches, so rank order is data order."""
    batches = all_batches()
    per_rank = len(batches) // WORLD_SIZE
    return batches[rank * per_rank:(rank + 1) * per_rank]


def sampler_loader(rank: int) -> torch.utils.data.DataLoader:
    """The README's way: rank ``rank``'s share of one dataset through a ``DistributedSampler``."""
    x = torch.cat([x for x, _ in all_batches()])[:20]
    y = torch.cat([y for _, y in all_batches()])[:20]
    dataset = torch.utils.data.TensorDataset(x, y)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=WORLD_SIZE, rank=rank, shuffle=False)
    return torch.utils.data.DataLoader(dataset, batch_size=4, sampler=sampler)


def teacher() -> nn.Module:
    return build_model(seed=7)


#: name -> (method, options): scored once with compute_scores and pruned with global_prune.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "snip": ("snip", {}),
    "iter_snip": ("iter_snip", {"rounds": 3}),
    "grasp": ("grasp", {}),
    "synflow": ("synflow", {"rounds": 4}),
    "ntksap": ("ntksap", {"rounds": 2, "repeats": 3}),
    "px": ("px", {"rounds": 3}),
    "lnpt": ("lnpt", {}),
    "random": ("random", {"rounds": 2}),
    "magnitude": ("magnitude", {}),
}
SPARSITY = 0.8


def case_options(name: str) -> dict[str, Any]:
    method, options = CASES[name]
    options = dict(options, seed=3, progress=False, on_collapse="ignore")
    if method == "lnpt":
        options["teacher"] = teacher()
    return options


def score_and_prune(name: str, data: Any, **extra: Any) -> dict[str, dict[str, torch.Tensor]]:
    """Scores (one round) and final masks of case ``name`` on a fresh model."""
    method = CASES[name][0]
    options = case_options(name)
    score_options = {k: v for k, v in options.items() if k != "rounds"}
    scores = tpe.compute_scores(build_model(), method, data, **score_options, **extra)
    model = build_model()
    tpe.global_prune(model, method, SPARSITY, data, **options, **extra)
    return {"scores": scores, "masks": masks_of(model)}


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: mask.clone() for name, mask in model.named_buffers() if name.endswith("_mask")}


class LocalOnly(tpe.PruningMethod):
    """A method that reads this rank's data but forgets to all-reduce: the ranks must disagree."""

    needs_data = True

    @classmethod
    def score(cls, problem, config):  # noqa: ANN001, ANN206
        local = float(sum(x.sum() for x, _ in problem.data))
        return [(w * local).sin().abs() for w in problem.weights()]


def expect_error(call: Callable[[], Any]) -> str:
    """The error's type and message (``"no error"`` if it did not raise)."""
    try:
        call()
    except tpe.PruningError as error:
        return f"{type(error).__name__}: {error}"
    return "no error"


def bad_rank_cases(rank: int) -> dict[str, Any]:
    """Rank 1 alone gets batches the model cannot run (5x5 images): every rank must raise at once, not hang.

    A hang would end in gloo's 120 s timeout, which is not a PruningError: the worker would crash.
    """
    bad = [(torch.randn(4, 3, 5, 5, dtype=torch.float64), torch.randint(0, 5, (4,)))]
    data = bad if rank == 1 else rank_batches(rank)
    results: dict[str, Any] = {}
    for name, method, options in (("snip", "snip", {}), ("synflow", "synflow", {"rounds": 3}),
                                  ("ntksap", "ntksap", {"rounds": 2, "repeats": 1})):
        model = build_model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        results[f"bad_rank_{name}"] = expect_error(lambda: tpe.global_prune(
            model, method, SPARSITY, data, distributed=True, progress=False, on_collapse="ignore", **options))
        results[f"bad_rank_{name}_unchanged"] = not torch.nn.utils.prune.is_pruned(model) and all(
            torch.equal(before[k], v) for k, v in model.state_dict().items())
    return results


def ddp_step(rank: int) -> dict[str, Any]:
    """Prune distributed, wrap in DDP, take one SGD step: masked entries stay zero, ranks agree."""
    model = build_model()
    tpe.global_prune(model, "snip", SPARSITY, rank_batches(rank), distributed=True, progress=False)
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x, y = rank_batches(rank)[0]
    nn.functional.cross_entropy(ddp(x), y).backward()
    optimizer.step()
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules() if hasattr(m, "weight_mask")}
    return {"weights": weights, "masks": masks_of(model)}


def main(out: Path) -> None:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank = dist.get_rank()
    results: dict[str, Any] = {}
    try:
        for name in CASES:
            results[name] = score_and_prune(name, rank_batches(rank), distributed=True)
        results["snip_shard_data"] = score_and_prune("snip", all_batches(), distributed=True, shard_data=True)
        results["snip_sampler"] = score_and_prune("snip", sampler_loader(rank), distributed=True)
        results["ntksap_data_free"] = {"scores": tpe.compute_scores(
            build_model(), "ntksap", input_shape=INPUT_SHAPE, batch_size=4, repeats=3, seed=3, distributed=True)}
        model = build_model()
        torch.nn.utils.prune.global_unstructured(
            tpe.prunable_parameters(model), pruning_method=tpe.SNIP, amount=SPARSITY, model=model,
            data=rank_batches(rank), distributed=True)
        results["drop_in_snip"] = {"masks": masks_of(model)}
        results["ddp"] = ddp_step(rank)
        results["error_seed"] = expect_error(
            lambda: tpe.compute_scores(build_model(), "random", seed=rank, distributed=True))
        results["error_weights"] = expect_error(
            lambda: tpe.compute_scores(build_model(seed=rank), "snip", rank_batches(rank), distributed=True))
        results["error_local_only"] = expect_error(
            lambda: tpe.global_prune(build_model(), LocalOnly, SPARSITY, rank_batches(rank), distributed=True,
                                     progress=False, on_collapse="ignore"))
        results["error_no_batch"] = expect_error(
            lambda: tpe.compute_scores(build_model(), "snip", all_batches()[:1], distributed=True, shard_data=True))
        results.update(bad_rank_cases(rank))
        unchanged = build_model()
        before = {k: v.clone() for k, v in unchanged.state_dict().items()}
        expect_error(lambda: tpe.global_prune(unchanged, "random", SPARSITY, seed=rank, distributed=True))
        results["unchanged_after_error"] = all(torch.equal(before[k], v) for k, v in unchanged.state_dict().items()) \
            and not torch.nn.utils.prune.is_pruned(unchanged)
    finally:
        torch.save(results, out / f"rank{rank}.pt")
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
