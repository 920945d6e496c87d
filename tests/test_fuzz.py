"""Fuzzing the entry points with invalid arguments (api.md §7), and valid edge amounts.

``tests/test_errors.py`` checks one hand-written case per error class; here hypothesis
combines a random *fault* (a bad amount, bad rounds, a bad dtype, a mixed-device model, a
bad target list, bad data, NaN/inf, missing labels, seed/generator misuse, unknown options
or method names) with a random method (random, magnitude, snip, synflow, ntksap with
``repeats=1``, px with ``rounds=1``), a fresh or already-pruned model, and one of the four
entry points:

- ``tpe.global_prune(model, method, sparsity, ...)`` (method as a name or as the class),
- ``tpe.compute_scores(model, method, data, ...)``,
- ``prune.global_unstructured(params, pruning_method=tpe.X, amount=..., model=..., ...)``,
- ``tpe.X.apply(module, "weight", amount=..., model=..., ...)``.

Every call must raise a :class:`torch_prune_ext.PruningError` with a non-empty message and
leave the model bit-identical: ``state_dict`` (keys in order, dtypes, shapes, devices and
bytes, so NaN payloads count too), ``prune.is_pruned``, every hook dict (keys and hook
objects), module modes, parameter objects and ``requires_grad``, torch's cached ``weight``
attribute of pruned modules, and the global RNG state.

Where torch's own argument handling rejects a call before our code runs, the error is
torch's and is listed in :data:`TORCH_OWN_ERRORS` (``test_torch_own_argument_errors``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from builders import bn_model
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe
from torch_prune_ext import PruningError

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

METHOD_NAMES = ["random", "magnitude", "snip", "synflow", "ntksap", "px"]
CLASSES = {"random": tpe.Random, "magnitude": tpe.Magnitude, "snip": tpe.SNIP, "synflow": tpe.SynFlow,
           "ntksap": tpe.NTKSAP, "px": tpe.PX}
ENTRIES = ["global_prune", "compute_scores", "drop_in", "apply"]
INPUT_SHAPE = (2, 4, 4)
N_TOTAL = 3 * 2 * 3 * 3 + 5 * 12 + 3 * 5  # 129 prunable entries


make_model = bn_model


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, *INPUT_SHAPE, generator=g), torch.randint(0, 3, (4,), generator=g)


#: Valid options per method: the fuzzed fault is the only thing wrong with a call.
def base_options(method: str) -> dict[str, Any]:
    x, y = make_batch()
    return {
        "random": {},
        "magnitude": {},
        "snip": {"data": (x, y)},
        "synflow": {"input_shape": INPUT_SHAPE, "rounds": 2},
        "ntksap": {"input_shape": INPUT_SHAPE, "repeats": 1, "batch_size": 2, "rounds": 1},
        "px": {"data": (x, y), "rounds": 1},
    }[method]


# --------------------------------------------------------------------------- state snapshot
def _bits(t: torch.Tensor) -> bytes | None:
    if t.device.type == "meta":
        return None
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": [(k, v.dtype, tuple(v.shape), v.device, _bits(v)) for k, v in model.state_dict().items()],
        "is_pruned": prune.is_pruned(model),
        "hooks": [(name, [(k, id(h)) for k, h in m._forward_pre_hooks.items()],
                   [(k, id(h)) for k, h in m._forward_hooks.items()],
                   [(k, id(h)) for k, h in m._backward_hooks.items()],
                   list(m._state_dict_hooks), list(m._load_state_dict_pre_hooks))
                  for name, m in model.named_modules()],
        "modes": [m.training for m in model.modules()],
        "params": [(name, id(p), p.requires_grad) for name, p in model.named_parameters()],
        "cached": [(name, id(m.__dict__.get("weight"))) for name, m in model.named_modules()
                   if "weight_orig" in m._parameters],
        "rng": torch.get_rng_state(),
    }


def assert_unchanged(before: dict[str, Any], model: nn.Module) -> None:
    after = snapshot(model)
    for key in ("state", "is_pruned", "hooks", "modes", "params", "cached"):
        assert after[key] == before[key], f"{key} changed"
    assert torch.equal(after["rng"], before["rng"]), "the global RNG state changed"


# --------------------------------------------------------------------------- faults
class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


@dataclass
class Call:
    """One call: what every entry point gets (the fault overrides some of it)."""

    method: str
    entry: str
    prepruned: bool
    amount: Any = 0.5  # sparsity for global_prune, amount for the drop-in paths
    method_arg: Any = DEFAULT  # what is passed as ``method`` (default: name or class)
    options: dict[str, Any] = field(default_factory=dict)
    targets: Any = "default"
    model_arg: Any = None  # what is passed as ``model=`` (default: the model)
    setup: Callable[[nn.Sequential], None] | None = None
    applies: bool = True  # False: this fault means nothing for this method/entry (skipped)
    fault: str = ""


def run_call(call: Call, model: nn.Sequential) -> Any:
    options = dict(call.options)
    options.setdefault("progress", False)
    data = options.pop("data", None)
    model_arg = model if call.model_arg is None else call.model_arg
    if call.targets != "default":
        options["targets"] = call.targets
    if call.entry == "global_prune":
        method = call.method_arg if call.method_arg is not DEFAULT else call.method
        return tpe.global_prune(model_arg, method, call.amount, data=data, **options)
    if call.entry == "compute_scores":
        method = call.method_arg if call.method_arg is not DEFAULT else CLASSES[call.method]
        return tpe.compute_scores(model_arg, method, data, **options)
    cls = call.method_arg if call.method_arg is not DEFAULT else CLASSES[call.method]
    if call.entry == "drop_in":
        return prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=cls, amount=call.amount,
                                         model=model_arg, data=data, **options)
    return cls.apply(model[6], "weight", amount=call.amount, model=model_arg, data=data, **options)


def _set_nonfinite(value: float, where: str) -> Callable[[nn.Sequential], None]:
    def setup(model: nn.Sequential) -> None:
        with torch.no_grad():
            if where == "weight":
                model[6].weight[1, 2] = value  # model[6] is never pre-pruned: the entry is alive
            else:  # an eval-mode BatchNorm reads its running statistics (train mode would not)
                model.eval()
                model[1].running_var[0] = value
    return setup


def _meta_layer(model: nn.Sequential) -> None:
    model[6] = nn.Linear(5, 3, device="meta")


bad_real = st.one_of(
    st.floats(max_value=-1e-9, allow_infinity=True, allow_nan=False),
    st.floats(min_value=1 + 1e-9, allow_infinity=True, allow_nan=False),
    st.just(math.nan), st.just(-math.inf), st.just(math.inf),
)
bad_type = st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.just([0.5]), st.just(0.5j),
                     st.just(torch.tensor(0.5)))


@st.composite
def bad_amounts(draw: st.DrawFn, entry: str) -> Any:
    if entry == "global_prune":
        return draw(st.one_of(bad_real, bad_type, st.integers(min_value=2, max_value=10**30),
                              st.integers(max_value=-1, min_value=-10**30)))
    # a count larger than the entries still unpruned (apply: model[6] has 15), or negative
    return draw(st.one_of(bad_real, bad_type, st.integers(min_value=N_TOTAL + 1, max_value=10**30),
                          st.integers(max_value=-1, min_value=-10**30)))


@st.composite
def calls(draw: st.DrawFn) -> Call:
    method = draw(st.sampled_from(METHOD_NAMES))
    entry = draw(st.sampled_from(ENTRIES))
    prepruned = draw(st.booleans())
    call = Call(method, entry, prepruned, options=base_options(method))
    if entry == "global_prune" and draw(st.booleans()):
        call.method_arg = CLASSES[method]
    fault = draw(st.sampled_from([
        "amount", "rounds", "dtype", "meta", "targets_empty", "targets_mismatch", "targets_malformed", "model_arg",
        "data_shape", "data_type", "input_shape", "nonfinite_weight", "nonfinite_buffer", "nan_data",
        "no_labels", "seed_generator", "unknown_option", "unknown_method", "bad_choice",
    ]))
    opts = call.options
    if fault == "amount":
        call.applies = entry != "compute_scores"
        call.amount = draw(bad_amounts(entry))
    elif fault == "rounds":
        opts["rounds"] = draw(st.one_of(st.integers(max_value=0, min_value=-10**6), st.booleans(),
                                        st.floats(0.5, 3.5), st.just("2"), st.just(math.nan)))
    elif fault == "dtype":  # a non-floating dtype (unknown option for methods without dtype=)
        opts["dtype"] = draw(st.sampled_from([torch.int32, torch.int64, torch.bool, torch.uint8, torch.complex64,
                                              "float64", float, 64]))
    elif fault == "meta":
        # drop_in: torch's parameters_to_vector fails first (TORCH_OWN_ERRORS); apply: one target, one device
        # (a target on meta alone: test_a_meta_target_alone_gets_a_clear_error)
        call.applies = entry not in ("drop_in", "apply")
        call.setup = _meta_layer
    elif fault == "targets_empty":
        call.applies = entry != "apply"  # apply names its one target itself
        call.targets = draw(st.sampled_from([[], ()]))
    elif fault == "targets_mismatch":
        if entry == "drop_in":  # torch hands over every target's entries; the class gets a subset
            call.targets = "first_two"
        else:
            call.applies = entry != "apply"
            call.targets = "duplicate"
    elif fault == "targets_malformed":
        call.applies = entry != "apply"
        call.targets = draw(st.sampled_from(["stranger", "no_such_tensor", "flipped", "bare_modules", "strings",
                                             "not_iterable", "int_name"]))
    elif fault == "model_arg":
        call.model_arg = draw(st.sampled_from(["not a model", 3, "other_model"]))
        # another model is a valid model for the default targets of global_prune/compute_scores
        call.applies = call.model_arg != "other_model" or entry in ("drop_in", "apply")
    elif fault == "data_shape":
        call.applies = method in ("snip", "px", "synflow", "ntksap")
        x, y = make_batch()
        bad_x = draw(st.sampled_from([torch.randn(4, 3, 4, 4), torch.randn(4, 7), torch.randn(4, 2, 2, 2),
                                      torch.randn(4, 2, 4)]))
        opts.pop("input_shape", None)
        opts["data"] = (bad_x, y)
    elif fault == "data_type":
        opts["data"] = draw(st.sampled_from([5, 2.5, object(), "xyz", [[1, 2]], [None]]))
        if opts["data"] in ("xyz", [[1, 2]], [None]):  # iterables: only an error once they are read
            call.applies = method in ("snip", "px", "synflow", "ntksap")
            opts.pop("input_shape", None)
    elif fault == "input_shape":
        call.applies = method in ("synflow", "ntksap")
        opts["input_shape"] = draw(st.sampled_from([(3, 4, 4), (7,), (0, 4, 4), (-2, 4, 4), (2.5,), (), "abc",
                                                    (True, 4, 4)]))
    elif fault in ("nonfinite_weight", "nonfinite_buffer"):
        # random scores do not read weights; ntksap redraws the weights; magnitude reads no buffer
        readers = ("magnitude", "snip", "synflow", "px") if fault == "nonfinite_weight" else ()  # see report: snip/synflow
        call.applies = method in readers
        call.setup = _set_nonfinite(draw(st.sampled_from([math.nan, math.inf, -math.inf])), fault.split("_")[1])
    elif fault == "nan_data":
        call.applies = method in ("snip", "px")
        x, y = make_batch()
        x[draw(st.integers(0, 3)), 0, 1, 1] = draw(st.sampled_from([math.nan, math.inf]))
        opts["data"] = (x, y)
    elif fault == "no_labels":
        call.applies = method == "snip"
        x, _ = make_batch()
        opts["data"] = draw(st.sampled_from([x, (x,), [x], [(x,)]]))
    elif fault == "seed_generator":
        opts.update(draw(st.sampled_from([
            {"seed": 1, "generator": torch.Generator()}, {"seed": "1"}, {"seed": 1.5}, {"seed": True},
            {"generator": 5}, {"generator": "cpu"}, {"generator": torch.Generator}])))
    elif fault == "unknown_option":
        name = draw(st.sampled_from(["lr", "sparsity", "epochs", "Rounds", "input_shapes", "seeds"]))
        opts[name] = 1
    elif fault == "unknown_method":
        call.applies = entry in ("global_prune", "compute_scores")
        call.method_arg = draw(st.sampled_from(["snipp", "", "SynFlow ", "l1", 5, None, nn.Linear, prune.L1Unstructured,
                                                object]))
    elif fault == "bad_choice":
        opts.update(draw(st.sampled_from([{"schedule": "cosine"}, {"on_collapse": "abort"}, {"granularity": "row"},
                                          {"block_size": (0, 4)}, {"block_density": 1.5}])))
    call.fault = fault
    return call


STRANGER_HOLDER: list[nn.Module] = []


def resolve_targets_spec(spec: Any, model: nn.Sequential) -> Any:
    pairs = tpe.prunable_parameters(model)
    if not isinstance(spec, str) or spec == "default":
        return spec
    with torch.random.fork_rng():
        other = nn.Linear(2, 2)
    return {
        "first_two": pairs[:2],
        "duplicate": [pairs[0], pairs[1], pairs[0]],
        "stranger": [pairs[0], (other, "weight")],
        "no_such_tensor": [(model[0], "weights")],
        "flipped": [("weight", model[0])],
        "bare_modules": [model[0], model[4]],
        "strings": "weight",
        "not_iterable": 5,
        "int_name": [(model[0], 0)],
    }[spec]


def resolve_model_arg(arg: Any) -> Any:
    if arg == "other_model":
        return make_model(False)
    return arg


@SETTINGS
@given(call=calls())
def test_invalid_arguments_raise_a_pruning_error_and_change_nothing(call: Call) -> None:
    event(f"{call.fault}: {'run' if call.applies else 'not applicable'}")
    if not call.applies:
        return
    model = make_model(call.prepruned)
    if call.setup is not None:
        call.setup(model)
    call.targets = resolve_targets_spec(call.targets, model)
    call.model_arg = resolve_model_arg(call.model_arg)
    before = snapshot(model)
    with pytest.raises(PruningError) as info:
        run_call(call, model)
    assert str(info.value).strip(), f"empty message for {call}"
    assert_unchanged(before, model)


# --------------------------------------------------------------------------- torch's own checks
#: Calls that torch rejects before any torch_prune_ext code runs: the error is torch's own
#: (id, setup, call, torch's exception). The model is still unchanged.
TORCH_OWN_ERRORS: list[tuple[str, Any, Callable[[nn.Sequential], Any], type[Exception]]] = [
    ("global_unstructured-empty-parameter-list", None,  # parameters_to_vector: torch.cat of no tensors
     lambda m: prune.global_unstructured([], pruning_method=tpe.Magnitude, amount=0.5, model=m), ValueError),
    ("global_unstructured-non-iterable-parameters", None,
     lambda m: prune.global_unstructured(5, pruning_method=tpe.Magnitude, amount=0.5, model=m), TypeError),
    ("global_unstructured-targets-on-meta-and-cpu", _meta_layer,  # parameters_to_vector mixes devices
     lambda m: prune.global_unstructured(tpe.prunable_parameters(m), pruning_method=tpe.Magnitude, amount=0.5,
                                         model=m), RuntimeError),
]


@pytest.mark.parametrize("case", TORCH_OWN_ERRORS, ids=[c[0] for c in TORCH_OWN_ERRORS])
def test_torch_own_argument_errors(case):
    _, setup, call, error = case
    model = make_model(True)
    if setup is not None:
        setup(model)
    before = snapshot(model)
    with pytest.raises(error):
        call(model)
    assert_unchanged(before, model)


@pytest.mark.parametrize("entry", ["apply", "global_prune"])
def test_a_meta_target_alone_gets_a_clear_error(entry):
    model = make_model(False)
    _meta_layer(model)
    before = snapshot(model)
    with pytest.raises(PruningError, match="meta"):
        if entry == "apply":
            tpe.Magnitude.apply(model[6], "weight", amount=0.5, model=model)
        else:
            tpe.global_prune(model, "magnitude", 0.5, targets=[(model[6], "weight")])
    assert_unchanged(before, model)


def test_progress_must_be_a_bool():
    model = make_model(False)
    with pytest.raises(tpe.InvalidOptionError):
        tpe.global_prune(model, "magnitude", 0.5, progress="no")


# --------------------------------------------------------------------------- valid edges
def _zeros(model: nn.Module) -> int:
    return sum(int((getattr(m, n) == 0).sum()) for m, n in tpe.prunable_parameters(model))


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(METHOD_NAMES), prepruned=st.booleans(),
       edge=st.sampled_from(["zero_float", "zero_int", "one_float", "all_int"]),
       entry=st.sampled_from(["global_prune", "drop_in", "apply"]))
def test_edge_amounts_prune_exactly(method, prepruned, edge, entry):
    model = make_model(prepruned)
    options = base_options(method)
    data = options.pop("data", None)
    masks_before = {n: (getattr(m, "weight_mask", None)) for n, m in model.named_modules()}
    masks_before = {n: m.clone() for n, m in masks_before.items() if m is not None}
    dead_before = sum(int((getattr(m, n) == 0).sum()) for m, n in tpe.prunable_parameters(model))
    if entry == "global_prune":
        sparsity = {"zero_float": 0.0, "zero_int": 0, "one_float": 1.0, "all_int": 1}[edge]
        if sparsity == 0 and prepruned:
            sparsity = dead_before / N_TOTAL  # cannot go below the current sparsity
        tpe.global_prune(model, method, sparsity, data=data, on_collapse="ignore", progress=False, **options)
        assert_zero = round(sparsity * N_TOTAL)
        assert sum(int((m.weight_mask == 0).sum()) for m, _ in tpe.prunable_parameters(model)) == assert_zero
    else:
        if entry == "drop_in":
            n_alive = N_TOTAL - dead_before
            n_scope, scope_dead = N_TOTAL, dead_before
        else:
            n_alive = n_scope = model[6].weight.numel()
            scope_dead = 0
        amount = {"zero_float": 0.0, "zero_int": 0, "one_float": 1.0, "all_int": n_alive}[edge]
        if entry == "drop_in":
            prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=CLASSES[method], amount=amount,
                                      model=model, data=data, on_collapse="ignore", progress=False, **options)
            zeros = sum(int((m.weight_mask == 0).sum()) for m, _ in tpe.prunable_parameters(model))
        else:
            CLASSES[method].apply(model[6], "weight", amount=amount, model=model, data=data, on_collapse="ignore",
                                  progress=False, **options)
            zeros = int((model[6].weight_mask == 0).sum())
        expected = scope_dead + (0 if edge.startswith("zero") else n_alive)
        assert zeros == expected, (zeros, expected)
        assert n_scope >= zeros
    # pruned entries stay pruned
    for name, old in masks_before.items():
        new = dict(model.named_modules())[name].weight_mask
        assert bool(((old == 0) <= (new == 0)).all())
