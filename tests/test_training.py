"""The shared training stack: batch splitter, loop, accuracy, masks, and the callers that run on it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from builders import relu_mlp
from torch.nn.utils import prune

from torch_prune_ext.data import CifarTrainAugment, random_crop, random_horizontal_flip
from torch_prune_ext.errors import MissingDataError
from torch_prune_ext.evaluation import TrainRecipe, evaluate_accuracy, train_model
from torch_prune_ext.iunet import StandardAugment, finetune
from torch_prune_ext.iunet import accuracy as iunet_accuracy
from torch_prune_ext.training import (
    accuracy,
    input_batches,
    learning_gap,
    minibatches,
    model_device,
    optimizer_step,
    run_epoch,
    tensor_accuracy,
    train_epochs,
)

SIZES = (5, 7, 3)


def pruned_mlp(seed=0):
    model = relu_mlp(SIZES, seed)
    prune.random_unstructured(model[0], "weight", amount=0.5)
    return model


def data(n=37, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, SIZES[0], generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def reference_training(model, x, y, *, epochs, batch_size, generator, lr, transform=None, min_batch=1):
    """The loop every caller used to write out: shuffle, skip small batches, step, re-zero pruned entries."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.01)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            xb, yb = x[index], y[index]
            if len(index) < min_batch:
                continue
            if transform is not None:
                xb = transform(xb)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                model[0].weight_orig.mul_(model[0].weight_mask)
            total += float(loss.detach()) * len(index)
            count += len(index)
        losses.append(total / max(count, 1))
    return losses


# ------------------------------------------------------------------ batches
def test_minibatches_in_order_without_generator():
    x, y = torch.arange(7.0)[:, None], torch.arange(7)
    batches = list(minibatches(x, y, 3))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(torch.equal(xb[:, 0].long(), yb) for xb, yb in batches)


def test_minibatches_draw_one_permutation_before_the_batches_draw():
    x, y = torch.arange(10.0), torch.arange(10)
    g = torch.Generator().manual_seed(3)
    batches = minibatches(x, y, 4, g)
    first = next(batches)
    after = torch.rand(1, generator=g)  # what a transform of the first batch would draw
    rest = list(batches)
    reference = torch.Generator().manual_seed(3)
    order = torch.randperm(10, generator=reference)
    assert torch.equal(after, torch.rand(1, generator=reference))
    assert torch.equal(torch.cat([first[1]] + [b[1] for b in rest]), order)
    assert [len(b[1]) for b in [first, *rest]] == [4, 4, 2]


def test_input_batches_accepts_a_tensor_a_labelled_pair_and_a_list():
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
    assert [b.shape for b in input_batches(x)] == [torch.Size([4, 3])]
    assert [b.shape for b in input_batches((x, y))] == [torch.Size([4, 3])]
    assert len(list(input_batches([x, (x, y), [x[:2]]]))) == 3
    with pytest.raises(MissingDataError, match="each batch must be a tensor"):
        list(input_batches([{"x": x}]))


def test_model_device_of_a_model_without_parameters_is_cpu():
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")


# ------------------------------------------------------------------ loop
def test_run_epoch_weights_the_sums_and_skips_none():
    steps = {1.0: ({"loss": 1.0, "acc": 0.5}, 2), 2.0: None, 3.0: ({"loss": 3.0, "acc": 1.0}, 1)}
    sums, count = run_epoch([1.0, 2.0, 3.0], steps.get)
    assert sums == {"loss": 5.0, "acc": 2.0}
    assert count == 3


@pytest.mark.parametrize("min_batch", [1, 2])
def test_train_epochs_equals_the_reference_loop(min_batch):
    x, y = data(n=37)
    flip = torch.Generator().manual_seed(9)
    reference_flip = torch.Generator().manual_seed(9)
    model, reference = pruned_mlp(), pruned_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)

    def loss_fn(xb, yb):
        return F.cross_entropy(model(xb * torch.rand(1, generator=flip)), yb)

    losses = train_epochs(model, opt, x, y, loss_fn, epochs=3, batch_size=12, min_batch=min_batch,
                          generator=torch.Generator().manual_seed(4))
    expected = reference_training(reference, x, y, epochs=3, batch_size=12, lr=0.1, min_batch=min_batch,
                                  generator=torch.Generator().manual_seed(4),
                                  transform=lambda xb: xb * torch.rand(1, generator=reference_flip))
    assert losses == expected
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_train_epochs_skips_batches_below_min_batch():
    x, y = data(n=33)
    model = relu_mlp(SIZES)
    seen = []

    def loss_fn(xb, yb):
        seen.append(len(xb))
        return F.cross_entropy(model(xb), yb)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = train_epochs(model, opt, x, y, loss_fn, epochs=2, batch_size=16, generator=None, min_batch=2)
    assert seen == [16, 16, 16, 16]
    assert len(losses) == 2 and model.training


@pytest.mark.parametrize("keep_masks", [True, False])
def test_train_epochs_keeps_pruned_entries_at_zero_only_when_asked(keep_masks):
    x, y = data()
    model = pruned_mlp()
    pruned = model[0].weight_mask == 0
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    train_epochs(model, opt, x, y, lambda xb, yb: F.cross_entropy(model(xb), yb), epochs=1, batch_size=8,
                 generator=torch.Generator().manual_seed(0), keep_masks=keep_masks)
    zeros = int((model[0].weight_orig[pruned] == 0).sum())
    assert zeros == (int(pruned.sum()) if keep_masks else 0)
    assert bool((model[0].weight[pruned] == 0).all())


def test_optimizer_step_steps_the_scheduler_and_applies_explicit_masks():
    model = relu_mlp(SIZES)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    mask = torch.ones_like(model[2].weight)
    mask[0] = 0
    optimizer_step(opt, model(torch.randn(4, SIZES[0])).sum(), scheduler=scheduler, model=model,
                   masks={"2.weight": mask})
    assert opt.param_groups[0]["lr"] == 0.5
    assert bool((model[2].weight[0] == 0).all()) and bool((model[2].weight[1:] != 0).all())


# ------------------------------------------------------------------ accuracy
def test_tensor_accuracy_is_exact_and_independent_of_the_batch_size():
    torch.manual_seed(0)
    model = relu_mlp(SIZES).train()
    x, y = data(n=30)
    correct = int((model(x).argmax(1) == y).sum())
    results = {tensor_accuracy(model, x, y, batch_size) for batch_size in (1, 7, 30, 100)}
    assert results == {correct / 30}
    assert model.training
    zeroed = int((model(0 * x).argmax(1) == y).sum())
    assert tensor_accuracy(model, x, y, transform=lambda b: 0 * b) == zeroed / 30


def test_iunet_and_evaluation_accuracy_are_the_shared_one():
    """IUNET used a float32 mean (1/3 -> 0.3333333432674408); now every caller gives correct / total."""
    net = torch.nn.Linear(2, 2, bias=False)
    torch.nn.init.eye_(net.weight)
    x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 0, 1])
    assert iunet_accuracy(net, x, y) == evaluate_accuracy(net, x, y) == tensor_accuracy(net, x, y) == 1 / 3


def test_accuracy_needs_labels():
    with pytest.raises(MissingDataError, match="labelled"):
        accuracy(torch.nn.Linear(2, 2), [torch.zeros(3, 2)])


def test_learning_gap_reads_a_labelled_pair_like_its_inputs():
    teacher, student = relu_mlp(SIZES, seed=0), relu_mlp(SIZES, seed=1)
    x, y = data(n=12)
    assert learning_gap(student, teacher, (x, y)) == learning_gap(student, teacher, x) > 0


# ------------------------------------------------------------------ callers on the stack
def test_train_model_equals_the_reference_loop():
    x, y = data(n=40)
    model, reference = pruned_mlp(), pruned_mlp()
    recipe = TrainRecipe(epochs=2, batch_size=16, lr=0.1, momentum=0.9, weight_decay=0.01, schedule="constant")
    result = train_model(model, x, y, recipe, seed=5)
    expected = reference_training(reference, x, y, epochs=2, batch_size=16, lr=0.1,
                                  generator=torch.Generator().manual_seed(5))
    assert result.epoch_losses == tuple(expected) and result.steps == 6
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_finetune_equals_the_reference_loop():
    x, y = data(n=33)
    model, reference = pruned_mlp(), pruned_mlp()
    losses = finetune(model, (x, y), epochs=2, batch_size=16, lr=0.1, optimizer="sgd", weight_decay=0.01,
                      generator=torch.Generator().manual_seed(2))
    expected = reference_training(reference, x, y, epochs=2, batch_size=16, lr=0.1, min_batch=2,
                                  generator=torch.Generator().manual_seed(2))
    assert losses == expected
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


# ------------------------------------------------------------------ augmentation
def test_standard_augment_is_the_cifar_augmentation_at_the_input_size():
    x = torch.rand(6, 1, 28, 28)
    ours = StandardAugment(padding=2, flip_p=0.3, generator=torch.Generator().manual_seed(1))(x)
    cifar = CifarTrainAugment(size=None, padding=2, flip_p=0.3, generator=torch.Generator().manual_seed(1))(x)
    g = torch.Generator().manual_seed(1)
    manual = random_horizontal_flip(random_crop(x, (28, 28), 2, generator=g), 0.3, generator=g)
    assert torch.equal(ours, cifar) and torch.equal(ours, manual)
    assert isinstance(StandardAugment(), CifarTrainAugment)
    assert repr(StandardAugment(padding=2)) == "StandardAugment(padding=2, flip_p=0.5)"
