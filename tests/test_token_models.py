"""Token models (nn.Embedding + causal TransformerEncoder), a small ViT and tied weights: every method that can run does."""
from __future__ import annotations
import pytest
import torch
from torch import nn
import torch_prune_ext as tpe

class TinyGPT(nn.Module):
    def __init__(self, vocab=11, d=8, heads=2, layers=2, max_len=12, tie=False):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, max_len, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab, bias=False)
        if tie:
            self.head.weight = self.tok.weight
    def forward(self, ids):
        L = ids.shape[1]
        h = self.tok(ids) + self.pos[:, :L]
        mask = nn.Transformer.generate_square_subsequent_mask(L)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.head(h)[:, -1]

class TinyViT(nn.Module):
    def __init__(self, d=8, heads=2, layers=2, classes=3):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=16, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)
    def forward(self, x):
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = self.blocks(h)
        return self.head(self.norm(h).mean(1))

METHODS = ["random", "magnitude", "snip", "iter_snip", "grasp", "synflow", "ntksap"]


def _data(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "vit":
        return torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)
    return torch.randint(0, 11, (6, 12), generator=g), torch.randint(0, 11, (6,), generator=g)


def _build(kind):
    torch.manual_seed(0)
    return {"gpt": TinyGPT, "tied": lambda: TinyGPT(tie=True), "vit": TinyViT}[kind]()


@pytest.mark.parametrize("kind, n_targets", [("gpt", 1112), ("tied", 1112), ("vit", 1432)])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_prunes_exact_counts_with_finite_scores(kind, n_targets, method):
    model, data = _build(kind), _data(kind)
    options = {"rounds": 2} if method in ("iter_snip", "synflow", "ntksap", "random") else {}
    if method == "ntksap":
        options["repeats"] = 1
    scores = tpe.compute_scores(model, method, data, **{k: v for k, v in options.items() if k != "rounds"})
    assert all(bool(torch.isfinite(s).all()) for s in scores.values())
    report = tpe.global_prune(model, method, 0.5, data, progress=False, on_collapse="ignore", **options)
    assert report.layers.numel == n_targets and report.layers.numel - report.layers.kept == n_targets // 2
    assert torch.isfinite(model(data[0])).all()
    if kind == "tied":  # one tensor, one mask, under both names
        assert torch.equal(model.head.weight_mask, model.tok.weight_mask) and model.head.weight_orig is model.tok.weight_orig


def test_token_ids_out_of_range_is_a_clear_error_and_changes_nothing():
    model = _build("gpt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(tpe.BatchShapeError, match="token ids in"):
        tpe.global_prune(model, "snip", 0.5, (torch.full((2, 12), 11), torch.zeros(2, dtype=torch.long)))
    assert not torch.nn.utils.prune.is_pruned(model) and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_integer_batch_for_a_linear_model_names_the_dtype():
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(tpe.BatchShapeError, match="the dtype is the problem"):
        tpe.compute_scores(net, "snip", (torch.ones(3, 4, dtype=torch.long), torch.zeros(3, dtype=torch.long)))
