"""Hugging Face models (the optional extra 'hf'): a small GPT-2 and a small ViT, built from configs
(no download), pruned by every data-free and data-driven baseline through both entry points."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe

transformers = pytest.importorskip(
    "transformers", reason="the optional extra 'hf' (transformers) is not installed: pip install torch-prune-ext[hf]")
from transformers.pytorch_utils import Conv1D  # noqa: E402

METHODS = ["snip", "synflow", "ntksap", "magnitude", "random"]
CLASSES = {"snip": tpe.SNIP, "synflow": tpe.SynFlow, "ntksap": tpe.NTKSAP, "magnitude": tpe.Magnitude,
           "random": tpe.Random}
#: few rounds / draws: the test is about running and counting, not about the method's quality
OPTIONS = {"synflow": {"rounds": 2}, "ntksap": {"rounds": 2, "repeats": 1}, "random": {"seed": 0}}
VOCAB, SEQ, LABELS = 64, 12, 3


class GPT2Logits(nn.Module):
    """A tiny GPT2LMHeadModel whose forward returns the logits tensor (B, T, V)."""

    def __init__(self):
        super().__init__()
        config = transformers.GPT2Config(n_embd=32, n_head=2, n_layer=2, vocab_size=VOCAB, n_positions=16,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        self.hf = transformers.GPT2LMHeadModel(config)

    def forward(self, ids):
        return self.hf(input_ids=ids).logits


class ViTLogits(nn.Module):
    """A tiny ViTForImageClassification whose forward returns the logits tensor (B, classes)."""

    def __init__(self):
        super().__init__()
        config = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32,
                                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                        num_labels=LABELS, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
        self.hf = transformers.ViTForImageClassification(config)

    def forward(self, pixels):
        return self.hf(pixel_values=pixels).logits


def token_loss(logits, labels):
    """Next-token cross-entropy on the flattened (B, T, V) logits."""
    return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def _build(kind):
    torch.manual_seed(0)
    return (GPT2Logits if kind == "gpt2" else ViTLogits)()


def _data(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "gpt2":
        ids = torch.randint(0, VOCAB, (4, SEQ), generator=g)
        # labels shaped like the ids: a list of one batch, else (ids, labels) would read as two batches
        return [(ids, torch.roll(ids, -1, dims=1))]
    return [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, LABELS, (4,), generator=g))]


def _options(kind, method):
    options = dict(OPTIONS.get(method, {}))
    if method == "snip" and kind == "gpt2":
        options["loss_fn"] = token_loss
    return options


def _trainable(module, name):
    """The tensor behind module.<name>: <name>_orig once torch.nn.utils.prune reparametrised it."""
    return getattr(module, name + "_orig") if hasattr(module, name + "_orig") else getattr(module, name)


def _n_total(model):
    """Entries of the default targets, a tied tensor counted once."""
    tensors = {id(t): t for t in (_trainable(m, n) for m, n in tpe.prunable_parameters(model))}
    return sum(t.numel() for t in tensors.values())


def _n_pruned(model):
    """Zero mask entries of the default targets, a tied tensor counted once."""
    masks = {}
    for module, name in tpe.prunable_parameters(model):
        masks.setdefault(id(_trainable(module, name)), getattr(module, name + "_mask"))
    return sum(int((m == 0).sum()) for m in masks.values())


def _check(kind, model, n_total, data):
    assert _n_pruned(model) == round(0.5 * n_total)
    if kind == "gpt2":  # the tied head: one tensor, one mask, under both names
        hf = model.hf
        assert hf.lm_head.weight_orig is hf.transformer.wte.weight_orig
        assert hf.lm_head.weight_orig.data_ptr() == hf.transformer.wte.weight_orig.data_ptr()
        assert torch.equal(hf.lm_head.weight_mask, hf.transformer.wte.weight_mask)
        assert torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)
    with torch.no_grad():
        assert torch.isfinite(model(data[0][0])).all()


@pytest.mark.parametrize("kind", ["gpt2", "vit"])
def test_default_targets_include_hf_conv1d_and_the_tied_head(kind):
    model = _build(kind)
    pairs = tpe.prunable_parameters(model)
    modules = [m for m, _ in pairs]
    if kind == "gpt2":
        conv1d = [m for m in model.modules() if isinstance(m, Conv1D)]
        assert len(conv1d) == 8 and all(any(m is c for m in modules) for c in conv1d)
        hf = model.hf
        assert hf.lm_head.weight is hf.transformer.wte.weight  # tied by transformers
        assert any(m is hf.lm_head for m in modules) and any(m is hf.transformer.wte for m in modules)
    else:
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert all(any(m is c for m in modules) for c in linear)
        assert any(isinstance(m, nn.Conv2d) for m in modules)  # the patch embedding
    assert _n_total(model) > 0


@pytest.mark.parametrize("kind", ["gpt2", "vit"])
@pytest.mark.parametrize("method", METHODS)
def test_global_prune(kind, method):
    model, data = _build(kind), _data(kind)
    n_total = _n_total(model)
    report = tpe.global_prune(model, method, 0.5, data=data, progress=False, on_collapse="ignore",
                              **_options(kind, method))
    assert report.layers.numel == n_total and report.layers.numel - report.layers.kept == round(0.5 * n_total)
    _check(kind, model, n_total, data)


@pytest.mark.parametrize("kind", ["gpt2", "vit"])
@pytest.mark.parametrize("method", METHODS)
def test_global_unstructured(kind, method):
    model, data = _build(kind), _data(kind)
    n_total = _n_total(model)
    prune.global_unstructured(tpe.prunable_parameters(model), pruning_method=CLASSES[method], amount=0.5,
                              model=model, data=data, progress=False, on_collapse="ignore",
                              **_options(kind, method))
    _check(kind, model, n_total, data)


def test_ntksap_redraws_hf_conv1d_with_the_fan_in_of_its_input_axis():
    """Conv1D stores its weight as (in, out): the redraw is the Linear's (out, in) draw transposed,
    std sqrt(2 / in), not sqrt(2 / out)."""
    from torch_prune_ext.methods.ntksap import NTKSAPConfig, iter_draws

    n_in, n_out = 400, 40
    config = NTKSAPConfig(repeats=1, batch_size=2)

    def first_draw(layer):
        net = nn.Sequential(layer, nn.ReLU(), nn.Linear(n_out, 2))
        common, _ = tpe.NTKSAP.parse_options({"seed": 0, "input_shape": (n_in,)})
        problem = tpe.NTKSAP.prepare(net, None, None, common, config)
        return next(iter_draws(problem, config)).theta[0]

    conv1d = first_draw(Conv1D(n_out, n_in))
    assert tuple(conv1d.shape) == (n_in, n_out)
    assert float(conv1d.std()) == pytest.approx(math.sqrt(2 / n_in), rel=0.05)
    assert torch.equal(conv1d, first_draw(nn.Linear(n_in, n_out)).t())
