"""Bad input (api.md §7): a clear exception that names the problem, and nothing changed.

Every case runs on a fresh model, unpruned and already pruned, and checks the exception
class (from ``torch_prune_ext``), a key phrase of its message, and that ``model.state_dict()``
is bit-identical and ``prune.is_pruned(model)`` unchanged afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from builders import bn_model
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe
from torch_prune_ext import (
    BatchShapeError,
    CheckpointError,
    InvalidAmountError,
    InvalidOptionError,
    LayerCollapseError,
    MissingDataError,
    NonFiniteScoreError,
    PruningError,
    TargetError,
    UnknownMethodError,
    UnknownOptionError,
)

N_TOTAL = 3 * 2 * 3 * 3 + 5 * 12 + 3 * 5  # prunable entries of make_model(): 54 + 60 + 15 = 129


make_model = bn_model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 2, 4, 4, generator=g), torch.randint(0, 3, (4,), generator=g)


def alive(model: nn.Module) -> int:
    return sum(int((getattr(m, n) != 0).sum()) for m, n in tpe.prunable_parameters(model))


def drop_in(model: nn.Module, method: type, amount, **kwargs) -> None:
    prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=method, amount=amount, model=model,
                              **kwargs)


def bits(t: torch.Tensor) -> torch.Tensor | None:
    if t.device.type == "meta":
        return None
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def snapshot(model: nn.Module) -> tuple:
    state = [(k, v.dtype, tuple(v.shape), v.device, bits(v)) for k, v in model.state_dict().items()]
    hooks = [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]
    params = [(name, id(p), p.requires_grad) for name, p in model.named_parameters()]
    return state, prune.is_pruned(model), hooks, [m.training for m in model.modules()], params


def assert_unchanged(before: tuple, model: nn.Module) -> None:
    after = snapshot(model)
    state_b, pruned_b, hooks_b, modes_b, params_b = before
    state_a, pruned_a, hooks_a, modes_a, params_a = after
    assert [s[:4] for s in state_a] == [s[:4] for s in state_b], "state_dict keys/shapes changed"
    for (key, *_, b), (_, *_, a) in zip(state_b, state_a, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b), f"{key} changed"
    assert pruned_a == pruned_b, "prune.is_pruned changed"
    assert hooks_a == hooks_b, "hooks changed"
    assert modes_a == modes_b, "training modes changed"
    assert params_a == params_b, "parameters were replaced (an optimizer holding them would be detached)"


@dataclass
class Case:
    id: str
    error: type[PruningError]
    phrase: str
    call: Callable[[nn.Module, torch.Tensor, torch.Tensor], object]
    model: Callable[[bool], nn.Module] = make_model


def _with_nan_weight(prepruned: bool) -> nn.Module:
    model = make_model(prepruned)
    with torch.no_grad():
        model[6].weight[1, 2] = float("nan")
    return model


def _with_meta_layer(prepruned: bool) -> nn.Module:
    model = make_model(prepruned)
    model[6] = nn.Linear(5, 3, device="meta")
    return model


def _without_prunable(prepruned: bool) -> nn.Module:
    model = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU(), nn.LayerNorm(4))
    if prepruned:
        prune.random_unstructured(model[2], "weight", amount=0.5)  # pruned, but not a Conv/Linear
    return model


def _nan_data(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    return x


#: A module that belongs to no model of these tests (built once, outside any RNG check).
with torch.random.fork_rng():  # importing this file must not move the global RNG
    STRANGER = nn.Linear(2, 2)

CASES = [
    # amount / sparsity
    Case("sparsity>1", InvalidAmountError, "[0, 1]", lambda m, x, y: tpe.global_prune(m, "magnitude", 1.5)),
    Case("sparsity<0", InvalidAmountError, "[0, 1]", lambda m, x, y: tpe.global_prune(m, "magnitude", -0.1)),
    Case("sparsity-nan", InvalidAmountError, "[0, 1]",
         lambda m, x, y: tpe.global_prune(m, "magnitude", float("nan"))),
    Case("sparsity-bool", InvalidAmountError, "sparsity", lambda m, x, y: tpe.global_prune(m, "magnitude", True)),
    Case("sparsity-str", InvalidAmountError, "sparsity", lambda m, x, y: tpe.global_prune(m, "magnitude", "0.5")),
    Case("sparsity-str-snip", InvalidAmountError, "sparsity",
         lambda m, x, y: tpe.global_prune(m, "snip", "0.5", (x, y))),
    Case("amount>1", InvalidAmountError, "outside [0, 1]", lambda m, x, y: drop_in(m, tpe.Magnitude, 1.5)),
    Case("amount<0", InvalidAmountError, "outside [0, 1]", lambda m, x, y: drop_in(m, tpe.Magnitude, -0.2)),
    Case("amount-nan", InvalidAmountError, "outside [0, 1]", lambda m, x, y: drop_in(m, tpe.Magnitude, float("nan"))),
    Case("count<0", InvalidAmountError, "negative count", lambda m, x, y: drop_in(m, tpe.Magnitude, -3)),
    Case("count-too-large", InvalidAmountError, "more than the",
         lambda m, x, y: drop_in(m, tpe.Magnitude, alive(m) + 1)),
    Case("count-too-large-snip", InvalidAmountError, "more than the",
         lambda m, x, y: drop_in(m, tpe.SNIP, alive(m) + 1, data=(x, y))),
    Case("amount-bool", InvalidAmountError, "amount must be", lambda m, x, y: drop_in(m, tpe.Magnitude, True)),
    Case("amount-str", InvalidAmountError, "amount must be", lambda m, x, y: drop_in(m, tpe.Magnitude, "0.5")),
    Case("apply-count-too-large", InvalidAmountError, "more than the",
         lambda m, x, y: tpe.Magnitude.apply(m[4], "weight", amount=61, model=m)),
    Case("apply-amount>1", InvalidAmountError, "outside [0, 1]",
         lambda m, x, y: tpe.SNIP.apply(m[4], "weight", amount=1.01, model=m, data=(x, y))),
    # targets
    Case("empty-targets", TargetError, "empty", lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5, targets=[])),
    Case("empty-targets-scores", TargetError, "empty", lambda m, x, y: tpe.compute_scores(m, "magnitude", targets=[])),
    Case("several-devices", TargetError, "several devices", lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5),
         _with_meta_layer),
    # (the drop-in path cannot be checked here: torch's global_unstructured concatenates the tensors,
    # and fails on the mixed devices, before it constructs the pruning method)
    Case("several-devices-scores", TargetError, "several devices",
         lambda m, x, y: tpe.compute_scores(m, "random"), _with_meta_layer),
    Case("no-prunable-tensor", TargetError, "no Conv1d/2d/3d or Linear weight",
         lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5), _without_prunable),
    Case("no-prunable-tensor-scores", TargetError, "no Conv1d/2d/3d or Linear weight",
         lambda m, x, y: tpe.compute_scores(m, "random"), _without_prunable),
    Case("target-not-in-model", TargetError, "not a submodule",
         lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5, targets=[(STRANGER, "weight")])),
    Case("target-without-tensor", TargetError, "no parameter",
         lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5, targets=[(m[4], "nope")])),
    Case("target-twice", TargetError, "twice",
         lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5, targets=[(m[4], "weight"), (m[4], "weight")])),
    Case("drop-in-list-mismatch", TargetError, "targets=",
         lambda m, x, y: prune.global_unstructured([(m[4], "weight"), (m[6], "weight")], pruning_method=tpe.Magnitude,
                                                   amount=0.5, model=m)),
    # data and labels
    Case("snip-without-data", MissingDataError, "needs labelled data",
         lambda m, x, y: tpe.global_prune(m, "snip", 0.5)),
    Case("snip-without-data-scores", MissingDataError, "needs labelled data",
         lambda m, x, y: tpe.compute_scores(m, "snip")),
    Case("snip-without-data-drop-in", MissingDataError, "needs labelled data",
         lambda m, x, y: drop_in(m, tpe.SNIP, 0.5)),
    Case("grasp-without-data", MissingDataError, "needs labelled data",
         lambda m, x, y: tpe.global_prune(m, "grasp", 0.5)),
    Case("synflow-without-shape", MissingDataError, "input_shape",
         lambda m, x, y: tpe.global_prune(m, "synflow", 0.5, rounds=2)),
    Case("snip-without-labels", MissingDataError, "uses labels", lambda m, x, y: tpe.global_prune(m, "snip", 0.5, x)),
    Case("snip-without-labels-list", MissingDataError, "uses labels",
         lambda m, x, y: tpe.global_prune(m, "snip", 0.5, [x, x])),
    Case("snip-without-labels-drop-in", MissingDataError, "uses labels",
         lambda m, x, y: drop_in(m, tpe.SNIP, 0.5, data=x)),
    Case("grasp-without-labels", MissingDataError, "uses labels", lambda m, x, y: tpe.compute_scores(m, "grasp", x)),
    Case("empty-data", MissingDataError, "empty", lambda m, x, y: tpe.global_prune(m, "snip", 0.5, [])),
    Case("data-not-iterable", MissingDataError, "data must be", lambda m, x, y: tpe.global_prune(m, "snip", 0.5, 3.0)),
    Case("bad-batch-shape", BatchShapeError, "cannot run on a batch",
         lambda m, x, y: tpe.global_prune(m, "snip", 0.5, (x[:, :1], y))),
    Case("bad-batch-shape-spatial", BatchShapeError, "cannot run on a batch",
         lambda m, x, y: tpe.compute_scores(m, "snip", (torch.ones(4, 2, 6, 6), y))),
    Case("bad-batch-shape-drop-in", BatchShapeError, "cannot run on a batch",
         lambda m, x, y: drop_in(m, tpe.GraSP, 0.5, data=(x[:, :1], y))),
    Case("bad-input-shape-synflow", BatchShapeError, "cannot run on a batch",
         lambda m, x, y: tpe.global_prune(m, "synflow", 0.5, input_shape=(3, 4, 4), rounds=2)),
    # non-finite scores
    Case("nan-weight", NonFiniteScoreError, "NaN/inf", lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5),
         _with_nan_weight),
    Case("nan-weight-snip", NonFiniteScoreError, "NaN/inf", lambda m, x, y: tpe.global_prune(m, "snip", 0.5, (x, y)),
         _with_nan_weight),
    Case("nan-weight-scores", NonFiniteScoreError, "NaN/inf", lambda m, x, y: tpe.compute_scores(m, "magnitude"),
         _with_nan_weight),
    Case("nan-weight-drop-in", NonFiniteScoreError, "NaN/inf", lambda m, x, y: drop_in(m, tpe.Magnitude, 0.5),
         _with_nan_weight),
    Case("nan-data", NonFiniteScoreError, "NaN/inf",
         lambda m, x, y: tpe.global_prune(m, "snip", 0.5, (_nan_data(x), y))),
    Case("nan-data-grasp", NonFiniteScoreError, "NaN/inf",
         lambda m, x, y: tpe.compute_scores(m, "grasp", (_nan_data(x), y))),
    Case("nan-data-drop-in", NonFiniteScoreError, "NaN/inf",
         lambda m, x, y: drop_in(m, tpe.SNIP, 0.5, data=(_nan_data(x), y))),
    # methods and options
    Case("unknown-method", UnknownMethodError, "'nope'",
         lambda m, x, y: tpe.global_prune(m, "nope", 0.5)),
    Case("unknown-method-scores", UnknownMethodError, "'nope'",
         lambda m, x, y: tpe.compute_scores(m, "nope")),
    Case("method-not-a-method", UnknownMethodError, "L1Unstructured",
         lambda m, x, y: tpe.global_prune(m, prune.L1Unstructured, 0.5)),
    Case("unknown-option", UnknownOptionError, "foo", lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5, foo=1)),
    Case("unknown-option-scores", UnknownOptionError, "foo",
         lambda m, x, y: tpe.compute_scores(m, "snip", (x, y), foo=1)),
    Case("unknown-option-drop-in", UnknownOptionError, "foo", lambda m, x, y: drop_in(m, tpe.Magnitude, 0.5, foo=1)),
    Case("unknown-option-apply", UnknownOptionError, "foo",
         lambda m, x, y: tpe.Magnitude.apply(m[4], "weight", amount=0.5, model=m, foo=1)),
    Case("reserved-parameters", UnknownOptionError, "torch.nn.utils.prune",
         lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5, parameters=tpe.prunable_parameters(m))),
    Case("reserved-importance-scores", UnknownOptionError, "torch.nn.utils.prune",
         lambda m, x, y: tpe.compute_scores(m, "magnitude", importance_scores={})),
    Case("reserved-pruning-method", UnknownOptionError, "torch.nn.utils.prune",
         lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5, pruning_method=tpe.Magnitude)),
    Case("apply-importance-scores", InvalidOptionError, "importance_scores",
         lambda m, x, y: tpe.Magnitude.apply(m[4], "weight", amount=0.5, model=m,
                                             importance_scores=torch.ones(5, 12))),
    Case("seed-and-generator", InvalidOptionError, "either seed= or generator=",
         lambda m, x, y: tpe.global_prune(m, "random", 0.5, seed=1, generator=torch.Generator())),
    Case("seed-and-generator-drop-in", InvalidOptionError, "either seed= or generator=",
         lambda m, x, y: drop_in(m, tpe.Random, 0.5, seed=1, generator=torch.Generator())),
    Case("seed-and-generator-scores", InvalidOptionError, "either seed= or generator=",
         lambda m, x, y: tpe.compute_scores(m, "random", seed=1, generator=torch.Generator())),
    Case("rounds-zero", InvalidOptionError, "rounds", lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5, rounds=0)),
    Case("rounds-float", InvalidOptionError, "rounds",
         lambda m, x, y: tpe.global_prune(m, "synflow", 0.5, input_shape=(2, 4, 4), rounds=2.5)),
    Case("bad-schedule", InvalidOptionError, "schedule",
         lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5, rounds=3, schedule="cosine")),
    Case("bad-on-collapse", InvalidOptionError, "on_collapse",
         lambda m, x, y: tpe.global_prune(m, "magnitude", 0.5, on_collapse="panic")),
    Case("bad-input-shape", InvalidOptionError, "input_shape",
         lambda m, x, y: tpe.global_prune(m, "synflow", 0.5, input_shape=(2, -4, 4))),
    Case("bad-method-option", InvalidOptionError, "mode",
         lambda m, x, y: tpe.global_prune(m, "snip", 0.5, (x, y), mode="inference")),
    Case("bad-grasp-temperature", InvalidOptionError, "temperature",
         lambda m, x, y: tpe.global_prune(m, "grasp", 0.5, (x, y), temperature=0)),
    Case("drop-in-without-model", MissingDataError, "model",
         lambda m, x, y: prune.global_unstructured(tpe.prunable_parameters(m), pruning_method=tpe.Magnitude,
                                                   amount=0.5)),
    # collapse
    Case("collapse-raise-snip", LayerCollapseError, "every weight of 0.weight, 4.weight, 6.weight",
         lambda m, x, y: tpe.global_prune(m, "snip", 1.0, (x, y), on_collapse="raise")),
    Case("collapse-raise-magnitude-one-layer", LayerCollapseError, "every weight of 6.weight",
         lambda m, x, y: tpe.global_prune(m, "magnitude", 1.0, on_collapse="raise", targets=[(m[6], "weight")],
                                         input_shape=(2, 4, 4))),
    Case("collapse-raise-drop-in", LayerCollapseError, "every weight of 0.weight, 4.weight, 6.weight",
         lambda m, x, y: drop_in(m, tpe.SNIP, 1.0, data=(x, y), on_collapse="raise")),
]


@pytest.mark.parametrize("prepruned", [False, True], ids=["fresh", "prepruned"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_a_clear_error_and_changes_nothing(case: Case, prepruned: bool):
    model = case.model(prepruned)
    x, y = batch()
    before = snapshot(model)
    rng = torch.get_rng_state()
    with pytest.raises(case.error) as info:
        case.call(model, x, y)
    assert case.phrase in str(info.value), str(info.value)
    assert isinstance(info.value, PruningError)
    assert_unchanged(before, model)
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("method", ["magnitude", "random", "snip"])
def test_sparsity_below_the_current_sparsity_is_refused(method):
    model = make_model(prepruned=True)  # 27 + 15 = 42 of 129 entries pruned
    x, y = batch()
    before = snapshot(model)
    for sparsity in (0.0, 0.3, 41 / N_TOTAL):
        with pytest.raises(InvalidAmountError, match="never revived"):
            tpe.global_prune(model, method, sparsity, (x, y))
        assert_unchanged(before, model)
    # exactly the current sparsity is allowed and prunes nothing new
    tpe.global_prune(model, method, 42 / N_TOTAL, (x, y))
    assert sum(int((getattr(m, n) == 0).sum()) for m, n in tpe.prunable_parameters(model)) == 42


def test_collapse_raise_prunes_nothing_but_ignore_and_warn_do():
    x, y = batch()
    model = make_model(prepruned=False)
    before = snapshot(model)
    with pytest.raises(LayerCollapseError, match="Nothing was pruned"):
        tpe.global_prune(model, "snip", 1.0, (x, y), on_collapse="raise")
    assert_unchanged(before, model)
    report = tpe.global_prune(model, "snip", 1.0, (x, y), on_collapse="ignore")
    assert report.sparsity == 1.0 and prune.is_pruned(model)


def test_meta_device_case_really_mixes_devices():
    """Guard for the fake multi-device model used above: one target on meta, the others on CPU."""
    model = _with_meta_layer(False)
    devices = {getattr(m, n).device.type for m, n in tpe.prunable_parameters(model)}
    assert devices == {"cpu", "meta"}


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (InvalidAmountError, (ValueError,)),
        (InvalidOptionError, (ValueError,)),
        (UnknownOptionError, (TypeError,)),
        (UnknownMethodError, (ValueError,)),
        (TargetError, (ValueError,)),
        (MissingDataError, (ValueError,)),
        (BatchShapeError, (ValueError,)),
        (NonFiniteScoreError, (FloatingPointError, ArithmeticError)),
        (LayerCollapseError, (RuntimeError,)),
        (CheckpointError, (ValueError,)),
    ],
)
def test_error_classes_are_also_builtin_exceptions(error, bases):
    assert issubclass(error, PruningError)
    for base in bases:
        assert issubclass(error, base)
    assert getattr(tpe, error.__name__) is error


def test_bad_amount_is_caught_as_value_error():
    model = make_model(prepruned=False)
    with pytest.raises(ValueError):
        tpe.global_prune(model, "magnitude", 2)
    with pytest.raises(ValueError):
        drop_in(model, tpe.Magnitude, -1)
    assert not prune.is_pruned(model)


def test_unknown_option_is_caught_as_type_error_like_a_bad_keyword():
    model = make_model(prepruned=False)
    with pytest.raises(TypeError, match="Its options are"):
        tpe.global_prune(model, "snip", 0.5, batch(), foo=1)
    assert not prune.is_pruned(model)


def test_checkpoint_that_does_not_fit_changes_nothing():
    source = make_model(prepruned=True)
    target = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5),
                           nn.ReLU(), nn.Linear(5, 4))  # last layer differs
    before = snapshot(target)
    state = source.state_dict()
    state = {**state, "6.weight": torch.zeros(4, 5), "6.bias": torch.zeros(4)}
    state["4.weight_mask"] = state["4.weight_mask"][:, :6]  # shape mismatch on a pruned tensor
    with pytest.raises(CheckpointError, match="does not match"):
        tpe.load_pruned_state_dict(target, state)
    assert_unchanged(before, target)


def test_checkpoint_rejected_by_load_state_dict_is_rolled_back():
    source = make_model(prepruned=True)
    target = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5),
                           nn.ReLU(), nn.Linear(5, 4))  # last layer differs (unpruned there)
    before = snapshot(target)
    with pytest.raises(CheckpointError, match="does not fit"):
        tpe.load_pruned_state_dict(target, source.state_dict())
    assert_unchanged(before, target)
