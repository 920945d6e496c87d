"""Layer collapse (every input-output path cut) versus an emptied layer (density 0 behind a live path).

Masks are built by hand with ``prune.custom_from_mask``; ``global_prune`` at the current
sparsity then prunes nothing new and runs the collapse check on exactly those masks.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe
from torch_prune_ext import LayerCollapseError, LayerCollapseWarning, LayerEmptiedWarning
from torch_prune_ext.core.report import LayerSparsity, PruneReport, SparsityReport
from torch_prune_ext.evaluation.compare import _collapse_note

from builders import relu_mlp


class ResidualNet(nn.Module):
    """stem conv -> relu(stem + conv2(relu(bn(conv1(.))))) -> global average -> fc."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.conv2(torch.relu(self.bn(self.conv1(h)))))
        return self.fc(h.mean(dim=(2, 3)))


class TinyTransformer(nn.Module):
    """Linear embedding, one ``nn.TransformerEncoderLayer`` (post-norm, residual), mean over tokens, head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(8, 16)
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def zero(module: nn.Module) -> None:
    """A hand-built mask pruning every weight of ``module``."""
    prune.custom_from_mask(module, "weight", torch.zeros_like(module.weight))


def prune_as_masked(model: nn.Module, input_shape: tuple[int, ...], **options) -> PruneReport:
    """``global_prune`` at the current sparsity: nothing new is pruned, the hand-built masks are checked."""
    targets = tpe.prunable_parameters(model)
    sparsity = tpe.sparsity_report(model, targets).sparsity
    return tpe.global_prune(model, "magnitude", sparsity, input_shape=input_shape, progress=False, **options)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- (a) collapse
def test_an_mlp_with_a_zeroed_layer_is_a_collapse():
    model = relu_mlp((6, 5, 4, 3))
    zero(model[2])
    with pytest.warns(LayerCollapseWarning, match="cuts every input-to-output path") as record:
        report = prune_as_masked(model, (6,))
    assert not [w for w in record if issubclass(w.category, LayerEmptiedWarning)]
    assert report.paths_connected is False and report.has_collapse
    assert report.collapsed == ["2.weight"] and report.emptied == []
    assert report.layers.empty == ["2.weight"]


def test_raise_refuses_a_collapse_and_leaves_the_model_unchanged():
    model = relu_mlp((6, 5, 4, 3))
    zero(model[2])
    before = state(model)
    with pytest.raises(LayerCollapseError, match="every weight of 2.weight.*Nothing was pruned"):
        prune_as_masked(model, (6,), on_collapse="raise")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_ignore_is_silent_about_a_collapse_but_reports_it():
    model = relu_mlp((6, 5, 4, 3))
    zero(model[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = prune_as_masked(model, (6,), on_collapse="ignore")
    assert report.collapsed == ["0.weight"] and report.has_collapse


def test_a_layernorm_mlp_with_a_zeroed_layer_is_checked_and_a_collapse():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 3))
    zero(model[0])
    with pytest.raises(LayerCollapseError):
        prune_as_masked(model, (6,), on_collapse="raise")
    report = prune_as_masked(model, (6,), on_collapse="ignore")
    assert report.paths_connected is False and report.collapsed == ["0.weight"]


# --------------------------------------------------------------------------- (b) emptied
def test_a_zeroed_residual_branch_conv_is_emptied_not_a_collapse():
    model = ResidualNet()
    zero(model.conv1)
    with pytest.warns(LayerEmptiedWarning) as record:
        report = prune_as_masked(model, (2, 5, 5))
    assert [w.category for w in record] == [LayerEmptiedWarning]
    text = str(record[0].message)
    assert "conv1.weight" in text and "emptied, not a layer collapse" in text and "input-output paths survive" in text
    assert report.paths_connected is True and not report.has_collapse
    assert report.emptied == ["conv1.weight"] and report.collapsed == []


def test_raise_does_not_refuse_an_emptied_layer_but_warns():
    model = ResidualNet()
    zero(model.conv2)
    with pytest.warns(LayerEmptiedWarning, match="conv2.weight"):
        report = prune_as_masked(model, (2, 5, 5), on_collapse="raise")
    assert report.emptied == ["conv2.weight"]
    assert int(model.conv2.weight_mask.sum()) == 0


def test_emptied_and_collapse_warnings_differ_in_class_and_text():
    emptied_model, collapsed_model = ResidualNet(), ResidualNet()
    zero(emptied_model.conv1)
    zero(collapsed_model.fc)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        prune_as_masked(emptied_model, (2, 5, 5))
        prune_as_masked(collapsed_model, (2, 5, 5))
    assert [w.category for w in record] == [LayerEmptiedWarning, LayerCollapseWarning]
    assert "emptied" in str(record[0].message) and "emptied" not in str(record[1].message)
    assert "layer collapse" in str(record[1].message)


def test_synflow_empties_the_feed_forward_of_a_small_transformer_behind_the_residual_stream():
    model = TinyTransformer()
    # The Linear weights only: since MultiheadAttention.in_proj_weight became a default target,
    # SynFlow at 90% spreads the budget differently and no longer empties the feed-forward.
    linears = [(module, "weight") for module in model.modules() if isinstance(module, nn.Linear)]
    with pytest.warns(LayerEmptiedWarning, match="encoder.layers.0.linear1.weight"):
        report = tpe.global_prune(model, "synflow", 0.9, input_shape=(5, 8), progress=False, on_collapse="raise",
                                  targets=linears)
    feed_forward = ["encoder.layers.0.linear1.weight", "encoder.layers.0.linear2.weight"]
    assert report.emptied == feed_forward
    assert report.paths_connected is True and not report.has_collapse and report.collapsed == []


def test_a_transformer_with_its_head_zeroed_is_a_collapse():
    model = TinyTransformer()
    zero(model.head)
    with pytest.raises(LayerCollapseError, match="head.weight"):
        prune_as_masked(model, (5, 8), on_collapse="raise")


def test_unchecked_paths_report_a_density_0_layer_as_emptied_not_collapse():
    """InstanceNorm maps a constant to zero: the all-ones probe proves nothing, so nothing is claimed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.InstanceNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3))
    zero(model[0])
    with pytest.warns(LayerEmptiedWarning, match="input-output paths not checked"):
        report = prune_as_masked(model, (2, 6, 6), on_collapse="raise")
    assert report.paths_connected is None and report.emptied == ["0.weight"] and not report.has_collapse


# --------------------------------------------------------------------------- (c) table and dict
def test_report_table_and_dict_mark_emptied_and_collapsed_layers():
    emptied_model, collapsed_model = ResidualNet(), relu_mlp((6, 5, 4, 3))
    zero(emptied_model.conv1)
    zero(collapsed_model[2])
    emptied = prune_as_masked(emptied_model, (2, 5, 5), on_collapse="ignore")
    collapsed = prune_as_masked(collapsed_model, (6,), on_collapse="ignore")
    rows = {line.split()[0]: line for line in str(emptied).splitlines()}
    assert rows["conv1.weight"].rstrip().endswith("emptied") and not rows["conv2.weight"].rstrip().endswith("emptied")
    assert "emptied (density 0, input-output paths survive): conv1.weight" in str(emptied)
    assert "LAYER COLLAPSE" not in str(emptied)
    rows = {line.split()[0]: line for line in str(collapsed).splitlines()}
    assert rows["2.weight"].rstrip().endswith("COLLAPSED")
    assert "LAYER COLLAPSE: no input-to-output path survives the mask (density 0: 2.weight)" in str(collapsed)
    assert emptied.to_dict()["emptied"] == ["conv1.weight"] and emptied.to_dict()["collapsed"] == []
    assert emptied.to_dict()["has_collapse"] is False and emptied.to_dict()["layers"]["empty"] == ["conv1.weight"]
    assert collapsed.to_dict()["collapsed"] == ["2.weight"] and collapsed.to_dict()["has_collapse"] is True


def test_a_plain_sparsity_table_marks_density_0_and_drops_the_column_otherwise():
    report = SparsityReport([LayerSparsity("a.weight", (2, 2), 4, 0), LayerSparsity("b.weight", (2,), 2, 1)])
    lines = report.table().splitlines()
    assert lines[0].split()[-1] == "note" and lines[2].endswith("density 0")
    assert "note" not in SparsityReport([LayerSparsity("b.weight", (2,), 2, 1)]).table()
    with pytest.warns(DeprecationWarning, match="SparsityReport.empty"):
        assert report.collapsed == ["a.weight"]


# --------------------------------------------------------------------------- (d) compare's note
@pytest.mark.parametrize("connected, note", [
    (True, "emptied: a.weight"),
    (None, "emptied (paths not checked): a.weight"),
    (False, "layer collapse: a.weight"),
])
def test_compare_note_tells_emptied_from_collapse(connected, note):
    layers = SparsityReport([LayerSparsity("a.weight", (2, 2), 4, 0), LayerSparsity("b.weight", (2,), 2, 1)])
    assert _collapse_note(PruneReport("m", 0.5, 1, "exponential", layers, [], connected)) == note


def test_compare_note_of_a_collapse_without_an_empty_layer_and_of_a_clean_mask():
    layers = SparsityReport([LayerSparsity("b.weight", (2,), 2, 1)])
    assert _collapse_note(PruneReport("m", 0.5, 1, "exponential", layers, [], False)) == \
        "layer collapse: no input-output path survives"
    assert _collapse_note(PruneReport("m", 0.5, 1, "exponential", layers, [], True)) == ""
