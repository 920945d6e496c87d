"""LNPT: stage-A scores against a slow hand-written reference, and the stage-B trainer."""

from __future__ import annotations

import sys

import pytest
import torch
from builders import relu_mlp
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import torch_prune_ext as tpe
from torch_prune_ext.errors import InvalidOptionError, MissingDataError, TargetError
from torch_prune_ext.methods.lnpt import LNPT, lnpt_targets
from torch_prune_ext.training import (
    DistillationTrainer,
    MissingDependencyError,
    learning_gap,
    plot_history,
    weight_distance,
)

SIZES = (6, 5, 4, 3)


def mlp(sizes=SIZES, seed=0, bn=False):
    """With ``bn``: BatchNorm and Dropout(0.3) around every ReLU (train-mode behaviour to preserve)."""
    return relu_mlp(sizes, seed, bn, dropout=0.3 if bn else None)


def batches(n=3, size=8, dim=SIZES[0], seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, dim, generator=g) for _ in range(n)]


# ------------------------------------------------------------------ slow reference
DIST = {
    "mse": lambda a, b: ((a - b) ** 2).mean(),
    "l1": lambda a, b: (a - b).abs().mean(),
    "l2": lambda a, b: torch.sqrt(((a - b) ** 2).sum(1)).mean(),
    "cosine": lambda a, b: (1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean(),
}


def manual_forward(linears, x):
    """Features (input of the last Linear) and logits of a Linear/ReLU stack, weights given by hand."""
    h = x
    for w, b in linears[:-1]:
        h = torch.relu(h @ w.T + b)
    w, b = linears[-1]
    return h, h @ w.T + b


def reference_scores(student, teacher, data, distance="mse", kd=False, adapter=None, T=4.0, alpha=0.5):
    """|θ ⊙ ∂ℓ/∂θ| with an explicit masked copy W = θ * m and .backward()."""
    thetas, masks, biases = [], [], []
    for m in student:
        if isinstance(m, nn.Linear):
            raw = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            mask = m.weight_mask if hasattr(m, "weight_mask") else torch.ones_like(raw)
            thetas.append(raw.detach().clone().requires_grad_(True))
            masks.append(mask.clone())
            biases.append(m.bias.detach().clone())
    t_lin = [(m.weight.detach(), m.bias.detach()) for m in teacher if isinstance(m, nn.Linear)]
    gap_total, kd_total = 0.0, 0.0
    for x in data:
        phi_s, z_s = manual_forward([(t * m, b) for t, m, b in zip(thetas, masks, biases)], x)
        if adapter is not None:
            phi_s = phi_s @ adapter.weight.detach().T + adapter.bias.detach()
        phi_t, z_t = manual_forward(t_lin, x)
        gap = DIST[distance](phi_s, phi_t)
        gap_total = gap_total + gap
        p_t = torch.softmax(z_t / T, 1)
        kl = (p_t * (torch.log(p_t) - torch.log_softmax(z_s / T, 1))).sum(1).mean()
        kd_total = kd_total + (1 - alpha) * T * T * kl + alpha * gap
    (gap_total / len(data)).backward(retain_graph=True)
    scores = [(t * t.grad).abs().detach() for t in thetas[:-1]]
    if kd:
        head = thetas[-1]
        head.grad = None
        (kd_total / len(data)).backward()
        scores.append((head * head.grad).abs().detach())
    return scores


def student_and_teacher():
    teacher = mlp(seed=10)
    student = mlp(seed=20)
    prune.random_unstructured(student[0], "weight", amount=0.3)
    return student, teacher


# ------------------------------------------------------------------ stage A
@pytest.mark.parametrize("distance", ["mse", "l2", "cosine", "l1"])
def test_scores_match_slow_reference(distance):
    student, teacher = student_and_teacher()
    data = batches()
    got = tpe.compute_scores(student, LNPT, data, teacher=teacher, distance=distance)
    assert list(got) == ["0.weight", "2.weight"]  # the classifier is not a target by default
    want = reference_scores(student, teacher, data, distance)
    for g, w in zip(got.values(), want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
    assert bool((got["0.weight"][student[0].weight_mask == 0] == 0).all())


def test_kd_mode_scores_classifier():
    student, teacher = student_and_teacher()
    data = batches()
    got = tpe.compute_scores(student, LNPT, data, teacher=teacher, classifier="kd")
    assert list(got) == ["0.weight", "2.weight", "4.weight"]
    want = reference_scores(student, teacher, data, kd=True)
    for g, w in zip(got.values(), want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
    assert bool((got["4.weight"] > 0).any())


def test_classifier_dense_by_default_and_kd_prunes_it():
    student, teacher = student_and_teacher()
    tpe.global_prune(student, LNPT, 0.8, batches(), teacher=teacher, progress=False)
    assert not hasattr(student[4], "weight_mask") and bool((student[4].weight != 0).all())
    assert float((student[2].weight == 0).float().mean()) > 0.5
    other, teacher = student_and_teacher()
    tpe.global_prune(other, LNPT, 0.8, batches(), teacher=teacher, classifier="kd", on_collapse="ignore")
    assert hasattr(other[4], "weight_mask")


def test_global_unstructured_path():
    student, teacher = student_and_teacher()
    data = batches()
    targets = lnpt_targets(student)
    prune.global_unstructured(targets, pruning_method=LNPT, amount=0.5, model=student, data=data, teacher=teacher)
    assert not hasattr(student[4], "weight_mask")
    fresh, _ = student_and_teacher()
    with pytest.raises(TargetError, match="targets="):  # the classifier is not a default target
        prune.global_unstructured(tpe.prunable_parameters(fresh), pruning_method=LNPT, amount=0.5, model=fresh,
                                  data=data, teacher=teacher)
    with pytest.raises(TargetError, match="lnpt_targets"):
        prune.global_unstructured(tpe.prunable_parameters(fresh), pruning_method=LNPT, amount=0.5, model=fresh,
                                  data=data, teacher=teacher, targets=tpe.prunable_parameters(fresh))
    assert not hasattr(fresh[2], "weight_mask")  # nothing changed by the errors
    prune.global_unstructured(tpe.prunable_parameters(fresh), pruning_method=LNPT, amount=0.5, model=fresh,
                              data=data, teacher=teacher, targets=tpe.prunable_parameters(fresh), classifier="kd")
    assert hasattr(fresh[4], "weight_mask")


def test_labels_are_ignored():
    x = batches()
    garbage = [(b, torch.randn(b.shape[0])) for b in x]
    labelled = [(b, torch.randint(0, 3, (b.shape[0],))) for b in x]
    masks = []
    for data in (x, labelled, garbage, [(b, torch.full((b.shape[0],), -99)) for b in x]):
        student, teacher = student_and_teacher()
        tpe.global_prune(student, LNPT, 0.7, data, teacher=teacher)
        masks.append([student[0].weight_mask.clone(), student[2].weight_mask.clone()])
    for other in masks[1:]:
        for a, b in zip(masks[0], other):
            assert torch.equal(a, b)


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_model_and_teacher_untouched():
    student = mlp(seed=1, bn=True).train()
    teacher = mlp(seed=2, bn=True).train()
    teacher[1].eval()
    prune.random_unstructured(teacher[0], "weight", amount=0.5)
    adapter = nn.Linear(4, 4).train()
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in
              (("s", student), ("t", teacher), ("a", adapter))}
    modes = {name: [x.training for x in m.modules()] for name, m in (("s", student), ("t", teacher))}
    hooks = (_hook_count(student), _hook_count(teacher))
    teacher_weight_attr = teacher[0].__dict__.get("weight")
    rng = torch.get_rng_state()
    tpe.compute_scores(student, LNPT, batches(), teacher=teacher, adapter=adapter, classifier="kd")
    assert torch.equal(rng, torch.get_rng_state())
    for name, m in (("s", student), ("t", teacher), ("a", adapter)):
        after = m.state_dict()
        assert after.keys() == before[name].keys()
        assert all(torch.equal(after[k], v) for k, v in before[name].items())
    assert modes == {name: [x.training for x in m.modules()] for name, m in (("s", student), ("t", teacher))}
    assert adapter.training and (_hook_count(student), _hook_count(teacher)) == hooks
    assert teacher[0].__dict__.get("weight") is teacher_weight_attr
    assert all(p.grad is None for p in list(student.parameters()) + list(teacher.parameters()))


def test_feature_layer_by_name_and_callable():
    student, teacher = student_and_teacher()
    data = batches()
    default = tpe.compute_scores(student, LNPT, data, teacher=teacher)
    by_name = tpe.compute_scores(student, LNPT, data, teacher=teacher, feature_layer="3")
    by_fn = tpe.compute_scores(student, LNPT, data, teacher=teacher, feature_layer=lambda m: m[3])
    for key in default:
        torch.testing.assert_close(default[key], by_name[key])
        torch.testing.assert_close(default[key], by_fn[key])


def test_adapter_for_a_narrower_student():
    teacher = mlp(seed=10)
    student = mlp((6, 5, 2, 3), seed=20)
    torch.manual_seed(3)
    adapter = nn.Linear(2, 4)
    data = batches()
    with pytest.raises(InvalidOptionError, match="adapter="):
        tpe.compute_scores(student, LNPT, data, teacher=teacher)
    got = tpe.compute_scores(student, LNPT, data, teacher=teacher, adapter=adapter)
    want = reference_scores(student, teacher, data, adapter=adapter)
    for g, w in zip(got.values(), want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)


def test_errors():
    student, teacher = student_and_teacher()
    with pytest.raises(MissingDataError, match="teacher="):
        tpe.compute_scores(student, LNPT, batches())
    with pytest.raises(MissingDataError, match="teacher="):
        tpe.global_prune(student, LNPT, 0.5, batches())
    with pytest.raises(InvalidOptionError, match="distance"):
        tpe.compute_scores(student, LNPT, batches(), teacher=teacher, distance="hamming")
    with pytest.raises(InvalidOptionError, match="classifier"):
        tpe.compute_scores(student, LNPT, batches(), teacher=teacher, classifier="sparse")
    with pytest.raises(MissingDataError):
        tpe.compute_scores(student, LNPT, None, teacher=teacher)
    with pytest.raises(MissingDataError, match="teacher"):
        DistillationTrainer(student, None, torch.optim.SGD(student.parameters(), lr=0.1))
    assert not hasattr(student[2], "weight_mask")


# ------------------------------------------------------------------ stage B
def _pruned_student():
    student, teacher = student_and_teacher()
    tpe.global_prune(student, LNPT, 0.7, batches(), teacher=teacher)
    return student, teacher


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, weight_decay=0.1),
    lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
    lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
], ids=["sgd", "adam", "adamw"])
def test_masks_survive_training(make_opt):
    student, teacher = _pruned_student()
    masks = {i: student[i].weight_mask.clone() for i in (0, 2)}
    opt = make_opt(student.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    trainer = DistillationTrainer(student, teacher, opt, scheduler=sched, progress=False)
    history = trainer.fit(batches(4, seed=7), epochs=3)
    assert len(history) == 3 and all("learning_gap" in h and "weight_distance" in h for h in history)
    for i, mask in masks.items():
        assert torch.equal(student[i].weight_mask, mask)
        assert bool((student[i].weight[mask == 0] == 0).all())
        assert bool((student[i].weight_orig[mask == 0] == 0).all())
        assert bool((student[i].weight_orig[mask == 1] != 0).any())
    tpe.make_permanent(student)
    assert all(bool((student[i].weight[m == 0] == 0).all()) for i, m in masks.items())


def _hand_kd(z_s, z_t, T):
    p_t = torch.softmax(z_t / T, 1)
    return T * T * (p_t * (torch.log(p_t) - torch.log_softmax(z_s / T, 1))).sum(1).mean()


def test_alpha_zero_is_plain_kd():
    student, teacher = _pruned_student()
    x = batches(1)[0]
    trainer = DistillationTrainer(student, teacher, torch.optim.SGD(student.parameters(), lr=0.1), alpha=0.0,
                                  progress=False)
    loss, _ = trainer.loss(x)
    loss.backward()
    got = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    with torch.no_grad():
        z_t = teacher(x)
    want = _hand_kd(student(x), z_t, 4.0)
    want.backward()
    torch.testing.assert_close(loss, want)
    for g, p in zip(got, student.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_loss_weights_and_hard_labels():
    student, teacher = student_and_teacher()
    x = batches(1)[0]
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    with torch.no_grad():
        z_t = teacher(x)
        phi_t = teacher[:4](x)
        z_s, phi_s = student(x), student[:4](x)
    both, _ = DistillationTrainer(student, teacher, opt, kd_weight=0.3, feat_weight=2.0).loss(x)
    torch.testing.assert_close(both.detach(), 0.3 * _hand_kd(z_s, z_t, 4.0) + 2.0 * F.mse_loss(phi_s, phi_t))
    hard, _ = DistillationTrainer(student, teacher, opt, alpha=0.0, pseudo_labels="hard").loss(x)
    torch.testing.assert_close(hard.detach(), F.cross_entropy(z_s, z_t.argmax(1)))
    with pytest.raises(InvalidOptionError):
        DistillationTrainer(student, teacher, opt, pseudo_labels="fuzzy")


def test_trainer_ignores_labels_and_restores_teacher():
    def run(data):
        student, teacher = _pruned_student()
        teacher.train()
        trainer = DistillationTrainer(student, teacher, torch.optim.SGD(student.parameters(), lr=0.1),
                                      progress=False)
        trainer.fit(data, epochs=1, diagnostics=False)
        assert teacher.training
        return [p.detach().clone() for p in student.parameters()]

    x = batches(2, seed=5)
    plain = run(x)
    garbage = run([(b, torch.randn(b.shape[0])) for b in x])
    assert all(torch.equal(a, b) for a, b in zip(plain, garbage))


def test_diagnostics_and_plot(tmp_path, monkeypatch):
    student, teacher = student_and_teacher()
    assert learning_gap(teacher, teacher, batches()) == 0.0
    assert learning_gap(student, teacher, batches()) > 0.0
    init = {k: v.clone() for k, v in student.state_dict().items()}
    assert weight_distance(student, init) == 0.0
    with torch.no_grad():
        student[2].weight.add_(1.0)
    assert weight_distance(student, init) == pytest.approx(float(torch.ones(4, 5).norm()))
    history = [{"epoch": 1, "learning_gap": 1.0, "weight_distance": 2.0, "accuracy": 0.5}]
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match="pip install matplotlib"):
        plot_history(history, str(tmp_path / "x.png"))


def test_registered_by_name():
    assert tpe.METHODS["lnpt"] is LNPT and tpe.LNPT is LNPT
    student, teacher = student_and_teacher()
    report = tpe.global_prune(student, "lnpt", 0.6, batches(), teacher=teacher)
    assert report.method == "lnpt" and not hasattr(student[4], "weight_mask")
    assert tpe.lnpt_targets is lnpt_targets and tpe.DistillationTrainer is DistillationTrainer
