"""Faults in the middle of a schedule leave the model unchanged; saved rounds resume exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe


class Interrupt(Exception):
    pass


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


METHODS = [("synflow", {"input_shape": (3, 6, 6)}), ("ntksap", {"input_shape": (3, 6, 6), "repeats": 1,
                                                               "batch_size": 4}),
           ("random", {})]


@pytest.mark.parametrize("method, options", METHODS)
@pytest.mark.parametrize("error", [Interrupt, KeyboardInterrupt])
def test_an_interrupted_schedule_leaves_the_model_unchanged(method, options, error):
    model = small_net()
    before = snapshot(model)

    def stop_at_round_3(state: tpe.RoundState) -> None:
        if state.completed == 3:
            raise error()

    with pytest.raises(error):
        tpe.global_prune(model, method, 0.9, rounds=5, on_round=stop_at_round_3, progress=False, **options)
    assert same_state(model, before)
    assert not prune.is_pruned(model)


def test_a_data_loader_failing_at_round_k_leaves_the_model_unchanged():
    model = small_net()
    torch.nn.utils.prune.random_unstructured(model[0], "weight", amount=0.3)
    before = snapshot(model)
    batches = [(torch.randn(4, 3, 6, 6), torch.randint(0, 5, (4,)))]

    class FailingLoader:
        calls = 0

        def __iter__(self):
            FailingLoader.calls += 1
            if FailingLoader.calls == 3:
                raise RuntimeError("disk went away")
            return iter(batches)

    with pytest.raises(RuntimeError, match="disk went away"):
        tpe.global_prune(model, "iter_snip", 0.9, FailingLoader(), rounds=5, progress=False)
    assert same_state(model, before)


@pytest.mark.parametrize("method, options", METHODS)
def test_resuming_a_saved_round_gives_the_uninterrupted_result(method, options, tmp_path):
    reference = small_net()
    tpe.global_prune(reference, method, 0.9, rounds=5, seed=7, progress=False, on_collapse="ignore", **options)

    model = small_net()
    saved = tmp_path / "round.pt"

    def save_and_stop(state: tpe.RoundState) -> None:
        torch.save(state.to_dict(), saved)
        if state.completed == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tpe.global_prune(model, method, 0.9, rounds=5, seed=7, on_round=save_and_stop, progress=False, **options)
    state = tpe.RoundState.from_dict(torch.load(saved, weights_only=True))
    assert state.completed == 2
    report = tpe.global_prune(model, method, 0.9, rounds=5, seed=7, resume=state, progress=False,
                              on_collapse="ignore", **options)
    assert len(report.round_seconds) == 5
    for a, b in zip(tpe.prunable_parameters(model), tpe.prunable_parameters(reference)):
        assert torch.equal(a[0].weight_mask, b[0].weight_mask)


def test_a_state_from_another_run_is_refused_and_changes_nothing():
    model = small_net()
    other = nn.Sequential(nn.Linear(4, 4))
    states: list[tpe.RoundState] = []
    tpe.global_prune(other, "magnitude", 0.5, rounds=2, on_round=states.append, progress=False)
    before = snapshot(model)
    with pytest.raises(tpe.InvalidOptionError, match="does not fit"):
        tpe.global_prune(model, "magnitude", 0.5, rounds=2, resume=states[0], progress=False)
    assert same_state(model, before)
