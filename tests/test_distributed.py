"""Distributed scoring: two gloo processes launched with ``torch.distributed.run`` (torchrun) give
the scores of one process on all the data (to 1e-6, float64 models), identical masks on both
ranks, a clear error on every rank when the ranks disagree, and a model that DDP trains afterwards.

The two ranks run once per session (``tests/distributed_worker.py``, about 5 s); each test
checks one property of what they saved against a single-process computation here.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distributed_worker as worker
import torch_prune_ext as tpe
from torch_prune_ext.core.distributed import ScoringGroup, tensor_digest
from torch_prune_ext.errors import InvalidOptionError

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no torch.distributed gloo backend")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of the two ranks computed (one torchrun launch for the whole module)."""
    out = tmp_path_factory.mktemp("distributed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={worker.WORLD_SIZE}",
               str(Path(worker.__file__)), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(worker.WORLD_SIZE)]


@functools.cache
def single_process(name: str) -> dict[str, dict[str, torch.Tensor]]:
    """The same case in this process, on every rank's batches (computed once per case; not modified)."""
    return worker.score_and_prune(name, worker.all_batches())


def assert_close_scores(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        scale = float(want[key].abs().max())
        torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-6 * scale, msg=key)


@pytest.mark.parametrize("name", list(worker.CASES))
def test_distributed_scores_equal_single_process(ranks, name):
    want = single_process(name)
    for rank in ranks:
        assert_close_scores(rank[name]["scores"], want["scores"])


@pytest.mark.parametrize("name", list(worker.CASES))
def test_ranks_derive_identical_masks_equal_to_single_process(ranks, name):
    want = single_process(name)["masks"]
    for rank in ranks:
        assert rank[name]["masks"].keys() == want.keys()
        for key in want:
            assert torch.equal(rank[name]["masks"][key], ranks[0][name]["masks"][key]), key
    kept = sum(int(m.sum()) for m in want.values())
    agree = sum(int((ranks[0][name]["masks"][k] == want[k]).sum()) for k in want)
    total = sum(m.numel() for m in want.values())
    # float64 sums in another order: the same ranking, unless two scores tie to ~1e-15
    assert agree == total, f"{total - agree} mask entries differ from one process (of {total}, {kept} kept)"


def test_shard_data_splits_the_same_batches_round_robin(ranks):
    want = single_process("snip")
    for rank in ranks:
        assert_close_scores(rank["snip_shard_data"]["scores"], want["scores"])
        assert all(torch.equal(rank["snip_shard_data"]["masks"][k], want["masks"][k]) for k in want["masks"])


def test_a_distributed_sampler_loader_scores_like_one_process_on_every_rank_batch(ranks):
    every_batch = [batch for rank in range(worker.WORLD_SIZE) for batch in worker.sampler_loader(rank)]
    want = worker.score_and_prune("snip", every_batch)
    for rank in ranks:
        assert_close_scores(rank["snip_sampler"]["scores"], want["scores"])
        assert all(torch.equal(rank["snip_sampler"]["masks"][k], want["masks"][k]) for k in want["masks"])


def test_ntksap_data_free_draws_are_shared_out(ranks):
    want = tpe.compute_scores(worker.build_model(), "ntksap", input_shape=worker.INPUT_SHAPE, batch_size=4,
                              repeats=3, seed=3)
    for rank in ranks:
        assert_close_scores(rank["ntksap_data_free"]["scores"], want)


def test_drop_in_global_unstructured_takes_distributed(ranks):
    model = worker.build_model()
    torch.nn.utils.prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=tpe.SNIP,
                                             amount=worker.SPARSITY, model=model, data=worker.all_batches())
    want = worker.masks_of(model)
    for rank in ranks:
        assert all(torch.equal(rank["drop_in_snip"]["masks"][k], want[k]) for k in want)


def test_ddp_trains_the_pruned_model_afterwards(ranks):
    first, second = (rank["ddp"] for rank in ranks)
    for key, mask in first["masks"].items():
        assert torch.equal(mask, second["masks"][key])
        assert torch.equal(first["weights"][key.rsplit(".", 1)[0]], second["weights"][key.rsplit(".", 1)[0]])
        assert bool((first["weights"][key.rsplit(".", 1)[0]][mask == 0] == 0).all())


@pytest.mark.parametrize("case, expected", [
    ("error_seed", "DistributedMismatchError: The ranks disagree on the random generator (rank 0 vs rank 1)"),
    ("error_weights", "DistributedMismatchError: The ranks disagree on the target weights"),
    ("error_local_only", "DistributedMismatchError: The ranks disagree on the final masks"),
    ("error_no_batch", "MissingDataError: snip: rank(s) 1 of 2 have no pruning batch"),
])
def test_disagreeing_ranks_raise_on_every_rank(ranks, case, expected):
    for rank in ranks:
        assert rank[case].startswith(expected), rank[case]


@pytest.mark.parametrize("name", ["snip", "synflow", "ntksap"])
def test_a_rank_local_error_reaches_every_rank_naming_the_rank(ranks, name):
    """Rank 1's batches do not fit the model: the rank that runs the bad batch (rank 1; for NTK-SAP the
    owner of that draw, rank 0) raises its own error, the other a RankFailedError naming it (not a hang),
    and neither model is changed."""
    errors = [rank[f"bad_rank_{name}"] for rank in ranks]
    failing = [r for r, e in enumerate(errors) if e.startswith("BatchShapeError: The model cannot run on a batch")]
    assert len(failing) == 1 and ", 3, 5, 5)" in errors[failing[0]], errors
    healthy = errors[1 - failing[0]]
    assert healthy.startswith(f"RankFailedError: Distributed scoring stopped: another rank failed (rank {failing[0]}: "
                              "BatchShapeError: The model cannot run on a batch of shape ("), healthy
    assert all(rank[f"bad_rank_{name}_unchanged"] for rank in ranks)


def test_a_disagreement_leaves_the_model_unchanged(ranks):
    assert all(rank["unchanged_after_error"] for rank in ranks)


def test_cli_prune_under_torchrun_equals_one_process(tmp_path):
    """``torchrun -m torch_prune_ext prune --distributed``: rank 0 saves the masks one process finds
    with the same batches (100 examples split into one batch per rank)."""
    common = ["prune", "--model", "lenet_300_100", "--data", "random", "--method", "snip", "--sparsity", "0.9",
              "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "torch_prune_ext",
         *common, "--distributed", "-o", str(tmp_path / "two.pt")], capture_output=True, text=True, timeout=300, env=env)
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-3000:]
    assert launched.stdout.count("distributed: 2 processes, 2 pruning batches of up to 50") == 1  # rank 0 only
    from torch_prune_ext.cli.main import main

    assert main([*common, "--batch-size", "50", "-o", str(tmp_path / "one.pt")]) == 0
    two = torch.load(tmp_path / "two.pt", weights_only=True)["state_dict"]
    one = torch.load(tmp_path / "one.pt", weights_only=True)["state_dict"]
    masks = [key for key in one if key.endswith("_mask")]
    assert masks and all(torch.equal(two[key], one[key]) for key in masks)


def test_cli_distributed_outside_torchrun_is_a_clear_error(capsys, monkeypatch):
    from torch_prune_ext.cli.main import main

    monkeypatch.delenv("RANK", raising=False)
    assert main(["prune", "--model", "lenet_300_100", "--data", "random", "--distributed", "-o", "-"]) == 2
    assert "torchrun --nproc_per_node=N -m torch_prune_ext prune --distributed" in capsys.readouterr().err


# ------------------------------------------------------------- single-process pieces
def test_distributed_without_a_process_group_is_a_clear_error():
    net = worker.build_model()
    with pytest.raises(InvalidOptionError, match="init_process_group"):
        tpe.global_prune(net, "magnitude", 0.5, distributed=True)
    assert not torch.nn.utils.prune.is_pruned(net)


@pytest.mark.parametrize("options", [{"shard_data": True}, {"process_group": object()}, {"distributed": 1}])
def test_distributed_options_are_validated(options):
    with pytest.raises(InvalidOptionError):
        tpe.compute_scores(worker.build_model(), "magnitude", **options)


def test_round_robin_ownership_and_digest():
    groups = [ScoringGroup(None, rank, 3) for rank in range(3)]
    owners = [[g.rank for g in groups if g.owns(i)] for i in range(7)]
    assert owners == [[0], [1], [2], [0], [1], [2], [0]]
    a = torch.arange(6.0)
    assert tensor_digest([a]) == tensor_digest([a.clone()])
    assert tensor_digest([a]) != tensor_digest([a.double()])
    b = a.clone()
    b[3] = torch.nextafter(a[3], torch.tensor(4.0))  # one ulp away
    assert tensor_digest([a]) != tensor_digest([b])
