"""Config objects wherever a method name is (issue 14): global_prune, compute_scores and
torch.nn.utils.prune (global_unstructured, Cls.apply) give the same masks and scores with
``Cls.Config(...)`` as with the name and keyword options; disagreements and bad values are
InvalidOptionError; the config's fields document themselves; model faults are PruningErrors."""

from __future__ import annotations

import dataclasses
import itertools
from unittest import mock

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe
from torch_prune_ext.core import engine
from torch_prune_ext.core.scoring import PruningOptions


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(10, 6, generator=g), torch.randint(0, 3, (10,), generator=g)


def teacher() -> nn.Module:
    return tiny_net(seed=9)


# (method, its own options, common options, whether it reads the data)
CASES = [
    ("random", {"distribution": "uniform"}, {}, False),
    ("magnitude", {}, {}, False),
    ("snip", {"mode": "eval"}, {}, True),
    ("iter_snip", {"mode": "eval"}, {"rounds": 2}, True),
    ("grasp", {"temperature": 50.0}, {}, True),
    ("synflow", {"dtype": torch.float64}, {"input_shape": (6,), "rounds": 3}, False),
    ("ntksap", {"repeats": 2, "epsilon": 0.01, "batch_size": 4}, {"input_shape": (6,), "rounds": 2}, False),
    ("px", {"mode": "reference"}, {"rounds": 2}, True),
    ("lnpt", {"distance": "cosine"}, {}, True),
]
IDS = [case[0] for case in CASES]


def own_options(name: str, own: dict) -> dict:
    return {**own, "teacher": teacher()} if name == "lnpt" else dict(own)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------- the three entry points
@pytest.mark.parametrize("name, own, common, reads_data", CASES, ids=IDS)
def test_global_prune_with_a_config_equals_name_and_keywords(name, own, common, reads_data):
    data = batch() if reads_data else None
    options = own_options(name, own)
    by_name, by_config, by_keyword = tiny_net(), tiny_net(), tiny_net()
    cls = tpe.METHODS[name]
    tpe.global_prune(by_name, name, 0.6, data, progress=False, **common, **options)
    report = tpe.global_prune(by_config, cls.Config(**options), 0.6, data, progress=False, **common)
    tpe.global_prune(by_keyword, name, 0.6, data, progress=False, config=cls.Config(**options), **common)
    assert report.method == name
    assert_same_state(state(by_name), state(by_config))
    assert_same_state(state(by_name), state(by_keyword))
    assert any(k.endswith("weight_mask") for k in state(by_config))


@pytest.mark.parametrize("name, own, common, reads_data", CASES, ids=IDS)
def test_compute_scores_with_a_config_equals_name_and_keywords(name, own, common, reads_data):
    data = batch() if reads_data else None
    options = own_options(name, own)
    common = {k: v for k, v in common.items() if k != "rounds"}
    net = tiny_net()
    before = state(net)
    want = tpe.compute_scores(net, name, data, **common, **options)
    got = tpe.compute_scores(net, tpe.METHODS[name].Config(**options), data, **common)
    assert want.keys() == got.keys() and want
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert_same_state(before, state(net))


@pytest.mark.parametrize("name, own, common, reads_data", CASES, ids=IDS)
def test_global_unstructured_and_apply_take_config(name, own, common, reads_data):
    data = batch() if reads_data else None
    options = own_options(name, own)
    cls = tpe.METHODS[name]
    nets = [tiny_net() for _ in range(4)]
    params = [tpe.lnpt_targets(n) if name == "lnpt" else tpe.prunable_parameters(n) for n in nets]
    prune.global_unstructured(params[0], pruning_method=cls, amount=0.5, model=nets[0], data=data,
                              progress=False, **common, **options)
    prune.global_unstructured(params[1], pruning_method=cls, amount=0.5, model=nets[1], data=data,
                              progress=False, config=cls.Config(**options), **common)
    assert_same_state(state(nets[0]), state(nets[1]))
    cls.apply(nets[2][0], "weight", 7, model=nets[2], data=data, progress=False, **common, **options)
    hook = cls.apply(nets[3][0], "weight", 7, model=nets[3], data=data, progress=False, config=cls.Config(**options),
                     **common)
    assert isinstance(hook, cls) and hook.config == cls.Config(**options)
    assert int((nets[3][0].weight == 0).sum()) == 7
    assert_same_state(state(nets[2]), state(nets[3]))


def test_the_issue_examples():
    x = torch.randn(4, 6)
    a, b = tiny_net(), tiny_net()
    tpe.global_prune(a, tpe.NTKSAP.Config(repeats=2, epsilon=0.01), 0.9, data=x, progress=False, rounds=2)
    tpe.global_prune(b, "ntksap", 0.9, data=x, progress=False, rounds=2, repeats=2, epsilon=0.01)
    assert_same_state(state(a), state(b))
    scores = tpe.compute_scores(a, tpe.PX.Config(mode="reference"), data=x)
    assert set(scores) == {"0.weight", "2.weight", "4.weight"}
    assert all(bool((s >= 0).all()) for s in scores.values())


# ------------------------------------------------------------------------- disagreements
def test_a_config_of_another_method_is_an_invalid_option_and_nothing_changes():
    net = tiny_net()
    before = state(net)
    with pytest.raises(tpe.InvalidOptionError, match="NTKSAPConfig.*SNIP.Config"):
        tpe.global_prune(net, "snip", 0.5, batch(), config=tpe.NTKSAP.Config())
    with pytest.raises(tpe.InvalidOptionError, match="PXConfig"):
        tpe.compute_scores(net, tpe.SNIP, batch(), config=tpe.PX.Config())
    with pytest.raises(tpe.InvalidOptionError, match="SNIPConfig"):  # a sibling class is another method's
        tpe.compute_scores(net, "iter_snip", batch(), config=tpe.SNIP.Config())
    with pytest.raises(tpe.InvalidOptionError, match="SynFlowConfig"):
        prune.global_unstructured(tpe.prunable_parameters(net), pruning_method=tpe.Magnitude, amount=0.5,
                                  model=net, config=tpe.SynFlow.Config())
    with pytest.raises(tpe.InvalidOptionError, match="SynFlowConfig"):
        tpe.Magnitude.apply(net[0], "weight", 0.5, model=net, config=tpe.SynFlow.Config())
    assert_same_state(before, state(net))
    assert not prune.is_pruned(net)


def test_two_configs_or_a_config_and_its_fields_are_invalid_options():
    net = tiny_net()
    before = state(net)
    with pytest.raises(tpe.InvalidOptionError, match="two configs"):
        tpe.global_prune(net, tpe.SNIP.Config(), 0.5, batch(), config=tpe.SNIP.Config(mode="eval"))
    with pytest.raises(tpe.InvalidOptionError, match=r"repeats.*dataclasses.replace"):
        tpe.global_prune(net, tpe.NTKSAP.Config(), 0.5, input_shape=(6,), repeats=2)
    with pytest.raises(tpe.InvalidOptionError, match="mode"):
        prune.global_unstructured(tpe.prunable_parameters(net), pruning_method=tpe.SNIP, amount=0.5, model=net,
                                  data=batch(), config=tpe.SNIP.Config(), mode="eval")
    assert_same_state(before, state(net))


def test_the_same_config_twice_and_common_options_beside_a_config_are_fine():
    config = tpe.Random.Config(distribution="uniform")
    a, b = tiny_net(), tiny_net()
    tpe.global_prune(a, config, 0.5, config=config, seed=4, rounds=2, schedule="linear", progress=False)
    tpe.global_prune(b, "random", 0.5, distribution="uniform", seed=4, rounds=2, schedule="linear", progress=False)
    assert_same_state(state(a), state(b))


def test_a_config_class_instead_of_an_instance_says_so():
    with pytest.raises(tpe.UnknownMethodError, match=r"config class: pass an instance"):
        tpe.global_prune(tiny_net(), tpe.NTKSAP.Config, 0.5, input_shape=(6,))
    with pytest.raises(tpe.UnknownMethodError, match="Config"):
        tpe.compute_scores(tiny_net(), object())


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("make, phrase", [
    (lambda: tpe.NTKSAP.Config(repeats=0), "repeats must be a positive int"),
    (lambda: tpe.NTKSAP.Config(epsilon=-0.1), "epsilon must be a finite number > 0"),
    (lambda: tpe.NTKSAP.Config(chunk_size=2.5), "chunk_size"),
    (lambda: tpe.NTKSAP.Config(vectorize="yes"), "vectorize must be True, False or None"),
    (lambda: tpe.PX.Config(mode="theroy"), "mode must be one of 'theory', 'reference', 'release-2024'"),
    (lambda: tpe.PX.Config(dtype=torch.int64), "dtype must be a floating torch.dtype"),
    (lambda: tpe.Random.Config(distribution="cauchy"), "distribution must be one of 'normal', 'uniform'"),
    (lambda: tpe.SNIP.Config(mode="test"), "mode must be one of 'train', 'eval'"),
    (lambda: tpe.GraSP.Config(temperature=0), "temperature"),
    (lambda: tpe.SynFlow.Config(dtype="float64"), "dtype"),
    (lambda: tpe.LNPT.Config(alpha=1.5), r"alpha must be in \[0, 1\]"),
    (lambda: tpe.LNPT.Config(distance="hamming"), "Unknown distance"),
    (lambda: PruningOptions(schedule="cosine"), "schedule must be one of 'exponential', 'linear'"),
    (lambda: PruningOptions(rounds=0), "rounds must be a positive int"),
    (lambda: PruningOptions(progress="no"), "progress must be True or False"),
    (lambda: PruningOptions(input_shape=5), "input_shape must be the shape of one example"),
])
def test_config_values_are_checked_on_creation(make, phrase):
    with pytest.raises(tpe.InvalidOptionError, match=phrase) as info:
        make()
    assert isinstance(info.value, ValueError)


def test_a_bad_config_field_through_keywords_leaves_the_model_unchanged():
    net = tiny_net()
    before = state(net)
    with pytest.raises(tpe.InvalidOptionError, match="NTKSAP: repeats"):
        tpe.global_prune(net, "ntksap", 0.5, input_shape=(6,), repeats=-1)
    with pytest.raises(tpe.InvalidOptionError, match="NTKSAP: repeats"):
        prune.global_unstructured(tpe.prunable_parameters(net), pruning_method=tpe.NTKSAP, amount=0.5, model=net,
                                  input_shape=(6,), repeats=-1)
    assert_same_state(before, state(net))
    assert not prune.is_pruned(net)


def test_configs_are_frozen():
    config = tpe.NTKSAP.Config(repeats=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.repeats = 3  # type: ignore[misc]
    assert dataclasses.replace(config, repeats=3).repeats == 3


# ----------------------------------------------------------------- self-documenting fields
@pytest.mark.parametrize("cls", [*tpe.METHODS.values()], ids=list(tpe.METHODS))
def test_every_config_names_its_method_and_documents_its_fields(cls):
    assert cls.Config.method is cls
    assert type(cls.Config()).method is cls
    assert isinstance(cls.Config(), tpe.MethodConfig)
    for f in dataclasses.fields(cls.Config):
        help_text = f.metadata["help"]
        assert help_text and "\n" not in help_text, f.name
        choices = f.metadata.get("choices")
        if choices is not None:
            assert f.default in choices, f.name


def test_config_classes_are_distinct_per_method():
    configs = [cls.Config for cls in tpe.METHODS.values()]
    assert len(set(configs)) == len(configs)


def test_pruning_options_document_their_fields():
    fields = {f.name: f for f in dataclasses.fields(PruningOptions)}
    assert all(f.metadata["help"] for f in fields.values())
    assert fields["schedule"].metadata["choices"] == ("exponential", "linear")
    assert fields["on_collapse"].metadata["choices"] == ("warn", "raise", "ignore")
    assert fields["granularity"].metadata["choices"] == ("element", "block", "hybrid")
    assert "choices" not in fields["rounds"].metadata


def test_user_methods_get_a_config_of_their_own():
    class Squared(tpe.PruningMethod):
        @classmethod
        def score(cls, problem, config):
            return [(w * m) ** 2 for w, m in zip(problem.weights(), problem.masks)]

    class Cubed(Squared):
        @classmethod
        def score(cls, problem, config):
            return [(w * m).abs() ** 3 for w, m in zip(problem.weights(), problem.masks)]

    assert Squared.Config.method is Squared and Cubed.Config.method is Cubed
    assert Squared.Config is not Cubed.Config and issubclass(Cubed.Config, Squared.Config)
    assert Squared.Config.__name__ == "SquaredConfig"
    a, b = tiny_net(), tiny_net()
    tpe.global_prune(a, Squared.Config(), 0.5, progress=False)
    tpe.global_prune(b, "magnitude", 0.5, progress=False)  # the same ranking as |w|
    assert_same_state(state(a), state(b))


# -------------------------------------------------------------------------- one engine
def test_every_entry_point_counts_and_checks_collapse_in_the_engine_once():
    calls = []
    real = engine.check_collapse

    def counted(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    with mock.patch.object(engine, "check_collapse", side_effect=counted):
        net = tiny_net()
        tpe.global_prune(net, "magnitude", 0.3, progress=False)
        prune.global_unstructured(tpe.prunable_parameters(net), pruning_method=tpe.Magnitude, amount=0.3, model=net)
        tpe.Magnitude.apply(net[2], "weight", 0.3, model=net)
    assert calls == ["magnitude"] * 3


def test_sparsity_and_amount_goals_count_like_torch():
    masks = [torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.ones(6)]  # 10 entries, 1 pruned
    assert engine.SparsityGoal(0.5).counts(masks, 1, "exponential") == [5]
    assert engine.AmountGoal(0.5).counts(masks, 1, "exponential") == [1 + round(0.5 * 9)]
    assert engine.AmountGoal(3).counts(masks, 1, "linear") == [4]
    with pytest.raises(tpe.InvalidAmountError, match="already"):
        engine.SparsityGoal(0.05).counts(masks, 1, "exponential")
    with pytest.raises(tpe.InvalidAmountError, match="at most 9"):
        engine.AmountGoal(10).counts(masks, 1, "exponential")
    with pytest.raises(tpe.InvalidAmountError):
        engine.AmountGoal(-1)
    with pytest.raises(tpe.InvalidAmountError):
        engine.SparsityGoal(float("nan"))


# ------------------------------------------------------------- model faults are PruningErrors
class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": torch.relu(self.fc(x))}


class Flaky(nn.Module):
    """Runs its BatchNorm and ReLU on every other call only: a forward that differs between passes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.bn, self.fc2 = nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)
        self._count = itertools.count()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if next(self._count) % 2 == 0:
            h = torch.relu(self.bn(h))
        return self.fc2(h)


@pytest.mark.parametrize("name, options", [("ntksap", {"repeats": 1}), ("px", {})])
def test_a_model_returning_no_tensor_is_a_model_output_error(name, options):
    net = DictOutput()
    before = state(net)
    with pytest.raises(tpe.ModelOutputError, match="one tensor") as info:
        tpe.global_prune(net, name, 0.5, torch.randn(4, 6), progress=False, **options)
    assert isinstance(info.value, tpe.PruningError) and isinstance(info.value, TypeError)
    assert_same_state(before, state(net))
    assert not prune.is_pruned(net)


@pytest.mark.parametrize("name, options", [("ntksap", {"repeats": 1}), ("px", {"norm": "running"})])
def test_a_forward_that_changes_between_passes_is_a_model_forward_error(name, options):
    net = Flaky()
    before = state(net)
    with pytest.raises(tpe.ModelForwardError, match="forward") as info:
        tpe.compute_scores(net, name, torch.randn(4, 6), **options)
    assert isinstance(info.value, tpe.PruningError) and isinstance(info.value, RuntimeError)
    assert_same_state(before, state(net))
