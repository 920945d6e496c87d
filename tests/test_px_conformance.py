"""PX conformance modes against scores of the authors' official code.

The fixtures ``tests/fixtures/px_reference_scores.pt`` (HEAD ed6c40e, ``mode="reference"``) and
``px_release2024_scores.pt`` (82ce2bf, ``mode="release-2024"``) hold the official ``PX.score`` outputs
on the nets of :func:`builders.px_conformance_net` and the inputs of :func:`builders.px_conformance_batches`
(how they were made: ``tests/fixtures/PX_FIXTURES.md``). Both sides run in float64, so the match is
to rounding.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from builders import px_conformance_batches, px_conformance_net
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe
from torch_prune_ext.errors import InvalidOptionError
from torch_prune_ext.methods.px import PX, PXConfig
from torch_prune_ext.methods.px_conformance import HEAD_SKIPPED, RELEASE_SKIPPED, name_rule

FIXTURES = Path(__file__).parent / "fixtures"
FILES = {"reference": "px_reference_scores.pt", "release-2024": "px_release2024_scores.pt"}
NETS = {"bn": True, "plain": False}
D = torch.float64


def official(mode: str, net: str) -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / FILES[mode])[net]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).to(D)
    return float(torch.corrcoef(ranks)[0, 1])


def flat(scores: dict[str, torch.Tensor], names) -> torch.Tensor:
    return torch.cat([scores[n].flatten() for n in names])


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("mode", FILES)
def test_matches_official_scores(mode, net):
    expected = official(mode, net)
    model = px_conformance_net(NETS[net])
    scores = tpe.compute_scores(model, PX, px_conformance_batches(), mode=mode)
    assert scores.keys() == expected.keys()
    ours, theirs = flat(scores, expected), flat(expected, expected)
    live = theirs > 0
    assert int(live.sum()) > 0.6 * live.numel()  # the masks keep ~70%; scores there are positive
    assert torch.equal(ours > 0, live)
    assert spearman(ours[live], theirs[live]) >= 0.999
    for name in expected:
        torch.testing.assert_close(scores[name], expected[name], rtol=1e-5, atol=1e-5 * float(theirs.max()))


def test_modes_disagree_with_each_other_and_with_theory():
    """The fixtures discriminate: no mode reproduces another's official scores."""
    model = px_conformance_net(True)
    x = px_conformance_batches()
    theory = tpe.compute_scores(model, PX, x)
    for mode, other in (("reference", "release-2024"), ("release-2024", "reference")):
        expected = official(other, "bn")
        ours = flat(tpe.compute_scores(model, PX, x, mode=mode), expected)
        assert spearman(ours, flat(expected, expected)) < 0.99
        assert spearman(flat(theory, expected), flat(official(mode, "bn"), expected)) < 0.99


def test_reference_name_rule_transforms_shortcut_bn():
    """HEAD's rule reads state-dict names: ``shortcut.1`` (no "bn") is set to 1 in J, squared in P."""
    ones = name_rule("ones", HEAD_SKIPPED, D)
    squares = name_rule("squares", HEAD_SKIPPED, D)
    value = torch.tensor([-0.5, 2.0])
    for entry in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(ones(f"shortcut.1.{entry}", value), torch.ones(2, dtype=D))
        assert torch.equal(squares(f"shortcut.1.{entry}", value), torch.tensor([0.25, 4.0], dtype=D))
        assert torch.equal(ones(f"bn2.{entry}", value), value.to(D))
        assert torch.equal(squares(f"bn2.{entry}", value), value.to(D))
    assert torch.equal(squares("fc.weight", value), value.to(D))
    assert torch.equal(squares("conv1.weight_mask", value), value.to(D))
    assert torch.equal(name_rule("squares", RELEASE_SKIPPED, D)("fc.weight", value), value.to(D) ** 2)
    assert torch.equal(ones("x.num_batches_tracked", torch.tensor(3)), torch.tensor(3))


def test_reference_fixture_needs_the_name_rule_on_shortcut_bn():
    """Leaving the shortcut BN untouched (as if it were named ``shortcut.bn``) breaks the match."""
    model = px_conformance_net(True)
    model.shortcut = nn.Sequential(OrderedDict(conv=model.shortcut[0], bn=model.shortcut[1]))
    scores = tpe.compute_scores(model, PX, px_conformance_batches(), mode="reference")
    expected = official("reference", "bn")
    ours = torch.cat([s.flatten() for s in scores.values()])
    theirs = flat(expected, expected)
    assert float(((ours - theirs).abs() / theirs.max()).max()) > 1e-2


@pytest.mark.parametrize("mode", FILES)
def test_model_left_as_found(mode):
    model = px_conformance_net(True)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    tpe.compute_scores(model, PX, px_conformance_batches(), mode=mode)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())


def test_release_2024_through_global_prune_is_deterministic():
    x = torch.cat(px_conformance_batches())
    masks = []
    for _ in range(2):
        model = px_conformance_net(True)
        report = tpe.global_prune(model, "px", 0.9, data=x, mode="release-2024", rounds=3, progress=False,
                                  on_collapse="ignore")
        assert report.sparsity == pytest.approx(0.9, abs=1e-3)
        masks.append([b.clone() for n, b in model.named_buffers() if n.endswith("weight_mask")])
    assert all(torch.equal(a, b) for a, b in zip(*masks))


def test_release_2024_through_torch_prune():
    model = px_conformance_net(False)
    for module in (model.conv1, model.conv2, model.conv3, model.linear):
        prune.remove(module, "weight")
    parameters = tpe.prunable_parameters(model)
    total = sum(getattr(m, n).numel() for m, n in parameters)
    prune.global_unstructured(parameters, pruning_method=tpe.PX, amount=0.5, model=model, mode="release-2024",
                              data=px_conformance_batches(), rounds=2, progress=False)
    assert sum(int((getattr(m, "weight_mask") == 0).sum()) for m, _ in parameters) == round(0.5 * total)


def test_unknown_mode_is_an_invalid_option_naming_the_allowed_values():
    with pytest.raises(InvalidOptionError, match="'theory', 'reference', 'release-2024'.*'release2024'"):
        PXConfig(mode="release2024")
    model = px_conformance_net(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InvalidOptionError, match="release-2024"):
        tpe.global_prune(model, "px", 0.5, data=px_conformance_batches(), mode="paper", progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
