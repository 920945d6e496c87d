"""``prune``'s flags generated from every method's Config: each reaches its method (the config the
method scores with, and masks equal to ``global_prune`` with that option), foreign flags are one-line
errors, and LNPT runs from the command line with ``--teacher PATH``."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from typing import Any

import pytest
import torch
from torch import nn

import torch_prune_ext as tpe
from torch_prune_ext.cli.main import build_parser, main
from torch_prune_ext.cli.method_flags import method_flags
from torch_prune_ext.core.checkpoint import load_pruned_state_dict
from torch_prune_ext.methods import METHODS

NETS = """
import torch
from torch import nn

def build(num_classes=3):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, num_classes))

def wide(num_classes=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, num_classes))

def square_loss(logits, y):
    return (logits ** 2).mean()

def small_init(t, generator):
    return t.normal_(0.0, 0.05, generator=generator)

def adapter():
    torch.manual_seed(5)
    return nn.Linear(8, 8)

def l4_distance(a, b):
    return ((a - b) ** 4).mean()
"""

SHAPE = (1, 4, 4)
NUM_CLASSES = 3
PER_CLASS = 4
SPARSITY = 0.5


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """The user's module ``flag_nets_<test>`` in the current folder, imported; sys.path restored."""
    name = "flag_nets_" + str(abs(hash(str(tmp_path))))
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(NETS))
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.chdir(tmp_path)
    module = __import__(name)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture
def teacher_path(user_module, tmp_path):
    """A trained teacher of ``build``'s architecture (20 SGD steps on random data), saved as a state dict."""
    torch.manual_seed(7)
    teacher = user_module.build(NUM_CLASSES)
    x, y = torch.randn(32, *SHAPE), torch.randint(0, NUM_CLASSES, (32,))
    optimizer = torch.optim.SGD(teacher.parameters(), lr=0.1)
    for _ in range(20):
        optimizer.zero_grad()
        nn.functional.cross_entropy(teacher(x), y).backward()
        optimizer.step()
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    return path


def pruning_batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The pruning set ``prune --data random`` draws (one batch)."""
    generator = torch.Generator().manual_seed(seed)
    n = PER_CLASS * NUM_CLASSES
    x = torch.randn((n, *SHAPE), generator=generator)
    return [(x, torch.randint(0, NUM_CLASSES, (n,), generator=generator))]


def api_masks(module, method: str, data: bool, **options: Any) -> dict[str, torch.Tensor]:
    """The masks of ``global_prune`` on the model the command line builds (seed 0)."""
    torch.manual_seed(0)
    model = module.build(NUM_CLASSES)
    tpe.global_prune(model, method, SPARSITY, pruning_batches() if data else None, seed=0, input_shape=SHAPE,
                     progress=False, **options)
    return {k: v for k, v in model.state_dict().items() if k.endswith("_mask")}


def cli_run(module, method: str, argv: list[str], out, data: bool = True) -> int:
    return main(["prune", "--model", f"{module.__name__}:build", "--num-classes", str(NUM_CLASSES),
                 "--input-shape", *map(str, SHAPE), "--method", method, "--sparsity", str(SPARSITY),
                 "--per-class", str(PER_CLASS), *(["--data", "random"] if data else []), "--no-progress",
                 "-o", str(out), *argv])


def saved_masks(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in torch.load(path, weights_only=True)["state_dict"].items() if k.endswith("_mask")}


def teacher_of(module, path) -> nn.Module:
    teacher = module.build(NUM_CLASSES)
    load_pruned_state_dict(teacher, torch.load(path, weights_only=True))
    return teacher.eval()


@dataclasses.dataclass
class Case:
    """A method flag given on the command line, what the method must receive, and whether it moves the masks."""

    method: str
    argv: list[str]
    expected: dict[str, Any]
    changes_masks: bool
    base: list[str] = dataclasses.field(default_factory=list)
    data: bool = True

    def options(self, module, values: dict[str, Any]) -> dict[str, Any]:
        resolved = {"loss_fn": module.square_loss, "init": module.small_init, "distance": module.l4_distance}
        return {k: resolved.get(k, v) if v == "user" else v for k, v in values.items()}


KD = ["--classifier", "kd"]
CASES = [
    Case("random", ["--distribution", "uniform"], {"distribution": "uniform"}, True),
    Case("snip", ["--mode", "eval"], {"mode": "eval"}, True),
    Case("snip", ["--loss-fn", "MOD:square_loss"], {"loss_fn": "user"}, True),
    Case("iter_snip", ["--mode", "eval"], {"mode": "eval"}, True, base=["--rounds", "2"]),
    Case("iter_snip", ["--loss-fn", "MOD:square_loss"], {"loss_fn": "user"}, True, base=["--rounds", "2"]),
    Case("grasp", ["--mode", "eval"], {"mode": "eval"}, True),
    Case("grasp", ["--loss-fn", "MOD:square_loss"], {"loss_fn": "user"}, True),
    Case("grasp", ["--temperature", "1.5"], {"temperature": 1.5}, True),
    Case("synflow", ["--dtype", "float64"], {"dtype": torch.float64}, False, base=["--rounds", "2"]),
    Case("ntksap", ["--repeats", "2"], {"repeats": 2}, True),
    Case("ntksap", ["--epsilon", "0.5"], {"epsilon": 0.5}, True),
    Case("ntksap", ["--ntksap-batch-size", "3"], {"batch_size": 3}, True, data=False),
    Case("ntksap", ["--chunk-size", "2", "--vectorize"], {"chunk_size": 2, "vectorize": True}, False),
    Case("ntksap", ["--dtype", "float64"], {"dtype": torch.float64}, False),
    Case("ntksap", ["--init", "MOD:small_init"], {"init": "user"}, True),
    Case("ntksap", ["--no-channels-last"], {"channels_last": False}, False),
    Case("px", ["--mode", "reference"], {"mode": "reference"}, True),
    Case("px", ["--dtype", "float32"], {"dtype": torch.float32}, False),
    Case("px", ["--approximate-activations"], {"approximate_activations": True}, False),
    Case("px", ["--norm", "running"], {"norm": "running"}, True),
    Case("lnpt", ["--distance", "cosine"], {"distance": "cosine"}, True, base=["--teacher", "T"]),
    Case("lnpt", ["--distance", "MOD:l4_distance"], {"distance": "user"}, True, base=["--teacher", "T"]),
    Case("lnpt", ["--feature-layer", "2", "--teacher-feature-layer", "2"],
         {"feature_layer": "2", "teacher_feature_layer": "2"}, True, base=["--teacher", "T"]),
    Case("lnpt", KD, {"classifier": "kd"}, True, base=["--teacher", "T"]),
    Case("lnpt", ["--adapter", "MOD:adapter"], {"adapter": "module"}, True, base=["--teacher", "T"]),
    Case("lnpt", ["--mode", "eval"], {"mode": "eval"}, True, base=["--teacher", "T"]),
    Case("lnpt", ["--temperature", "0.1"], {"temperature": 0.1}, True, base=["--teacher", "T", *KD]),
    Case("lnpt", ["--alpha", "0.9"], {"alpha": 0.9}, True, base=["--teacher", "T", *KD]),
    Case("lnpt", ["--pseudo-labels", "hard"], {"pseudo_labels": "hard"}, True, base=["--teacher", "T", *KD]),
]


def test_the_cases_cover_every_field_of_every_method_config():
    covered = {(case.method, name) for case in CASES for name in case.expected}
    covered |= {("lnpt", "teacher")}  # every LNPT case passes --teacher
    every = {(name, f.name) for name, cls in METHODS.items() for f in dataclasses.fields(cls.Config)}
    assert covered == every


def _base_options(case: Case, module, teacher_path) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if "--teacher" in case.base:
        options["teacher"] = teacher_of(module, teacher_path)
    if "--rounds" in case.base:
        options["rounds"] = 2
    if "kd" in case.base:
        options["classifier"] = "kd"
    return options


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method}{''.join(c.argv[:1])}" for c in CASES])
def test_every_method_flag_reaches_its_method(case, user_module, teacher_path, tmp_path, monkeypatch, capsys):
    method = METHODS[case.method]
    seen = []
    original = method.score
    monkeypatch.setattr(method, "score", classmethod(lambda cls, problem, config: (seen.append(config),
                                                                                    original(problem, config))[1]))
    argv = [a.replace("MOD", user_module.__name__) for a in [*case.base, *case.argv]]
    argv = [str(teacher_path) if a == "T" else a for a in argv]
    out = tmp_path / "out.pt"
    assert cli_run(user_module, case.method, argv, out, case.data) == 0, capsys.readouterr().err
    for name, value in case.expected.items():  # the method scored with the given value
        got = getattr(seen[0], name)
        if value == "module":
            assert isinstance(got, nn.Module) and torch.equal(got.weight, user_module.adapter().weight)
        else:
            assert got == case.options(user_module, {name: value})[name], name
    if "--teacher" in case.base:
        assert torch.equal(seen[0].teacher[0].weight, teacher_of(user_module, teacher_path)[0].weight)
    monkeypatch.setattr(method, "score", original)
    base = _base_options(case, user_module, teacher_path)
    given = case.options(user_module, {k: user_module.adapter() if v == "module" else v
                                       for k, v in case.expected.items()})
    expected = api_masks(user_module, case.method, case.data, **base, **given)
    masks = saved_masks(out)
    assert masks.keys() == expected.keys()
    assert all(torch.equal(masks[k], expected[k]) for k in masks), "the CLI's masks are global_prune's"
    default = api_masks(user_module, case.method, case.data, **base)
    moved = any(not torch.equal(masks[k], default[k]) for k in masks)
    assert moved == case.changes_masks


def test_block_density_reaches_global_prune(user_module, tmp_path, capsys):
    out = tmp_path / "hybrid.pt"
    argv = ["--granularity", "hybrid", "--block-size", "2", "2", "--block-density", "0.9"]
    assert cli_run(user_module, "magnitude", argv, out) == 0, capsys.readouterr().err
    options = {"granularity": "hybrid", "block_size": (2, 2)}
    expected = api_masks(user_module, "magnitude", True, **options, block_density=0.9)
    masks = saved_masks(out)
    assert all(torch.equal(masks[k], expected[k]) for k in masks)
    default = api_masks(user_module, "magnitude", True, **options)
    assert any(not torch.equal(masks[k], default[k]) for k in masks)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("torch-prune-ext: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("method, argv, owners", [
    ("synflow", ["--repeats", "2"], "--repeats is an option of ntksap, not of synflow"),
    ("magnitude", ["--mode", "eval"], "--mode is an option of snip, iter_snip, grasp, px, lnpt, not of magnitude"),
    ("snip", ["--ntksap-batch-size", "3"], "--ntksap-batch-size is an option of ntksap, not of snip"),
    ("random", ["--teacher", "x.pt"], "--teacher is an option of lnpt, not of random"),
])
def test_a_flag_of_another_method_is_a_one_line_error(method, argv, owners, user_module, tmp_path, capsys):
    out = tmp_path / "never.pt"
    assert cli_run(user_module, method, argv, out) == 2
    assert owners in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("method, argv, message", [
    ("snip", ["--mode", "theory"], "mode must be one of 'train', 'eval'"),
    ("ntksap", ["--repeats", "0"], "repeats must be a positive int"),
    ("snip", ["--loss-fn", "no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
    ("lnpt", [], "teacher"),
])
def test_a_bad_method_value_is_a_one_line_error(method, argv, message, user_module, tmp_path, capsys):
    assert cli_run(user_module, method, argv, tmp_path / "never.pt") == 2
    assert message in one_line_error(capsys)


def test_a_bad_dtype_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["prune", "--method", "px", "--dtype", "int8"])
    assert exit_info.value.code == 2
    assert "not a floating dtype" in capsys.readouterr().err


def test_lnpt_teacher_from_a_prune_checkpoint(user_module, tmp_path, capsys):
    teacher_file = tmp_path / "teacher-pruned.pt"
    assert cli_run(user_module, "magnitude", [], teacher_file) == 0
    out = tmp_path / "student.pt"
    assert cli_run(user_module, "lnpt", ["--teacher", str(teacher_file)], out) == 0, capsys.readouterr().err
    teacher = user_module.build(NUM_CLASSES)
    load_pruned_state_dict(teacher, torch.load(teacher_file, weights_only=True)["state_dict"])
    expected = api_masks(user_module, "lnpt", True, teacher=teacher.eval())
    masks = saved_masks(out)
    assert set(masks) == {"0.weight_mask", "4.weight_mask"}  # the classifier stays dense
    assert all(torch.equal(masks[k], expected[k]) for k in masks)


def test_lnpt_teacher_of_another_architecture_is_a_one_line_error(user_module, tmp_path, capsys):
    wrong = tmp_path / "wide.pt"
    torch.save(user_module.wide(NUM_CLASSES).state_dict(), wrong)
    assert cli_run(user_module, "lnpt", ["--teacher", str(wrong)], tmp_path / "never.pt") == 2
    assert f"--teacher {wrong} does not fit --model {user_module.__name__}:build" in one_line_error(capsys)
    other_classes = tmp_path / "ten.pt"
    torch.save(user_module.build(10).state_dict(), other_classes)
    assert cli_run(user_module, "lnpt", ["--teacher", str(other_classes)], tmp_path / "never.pt") == 2
    assert "does not fit" in one_line_error(capsys)


def test_lnpt_teacher_checkpoint_of_another_model_is_a_one_line_error(user_module, tmp_path, capsys):
    other = tmp_path / "other.pt"
    torch.save({"format": "torch_prune_ext.checkpoint/1", "model": "resnet20", "state_dict": {}}, other)
    assert cli_run(user_module, "lnpt", ["--teacher", str(other)], tmp_path / "never.pt") == 2
    assert "is a checkpoint of resnet20" in one_line_error(capsys)


def test_methods_lists_every_method_flag_with_its_default(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for flag in method_flags({"--batch-size"}):
        for method in flag.owners:
            section = out.split(f"\n{method}:")[1].split("\n\n")[0]
            assert f"  {flag.option}=" in section, (method, flag.option)
    assert "  --repeats=5" in out.split("\nntksap:")[1] and "  --temperature=4.0" in out.split("\nlnpt:")[1]


def test_method_flags_do_not_clash_with_prune_flags():
    parser = build_parser()
    prune = parser._subparsers._group_actions[0].choices["prune"]
    options = [o for action in prune._actions for o in action.option_strings]
    assert len(options) == len(set(options))
    assert {"--batch-size", "--ntksap-batch-size", "--teacher", "--repeats", "--epsilon"} <= set(options)
