"""Running a model on substituted tensors, and leaving it exactly as it was.

Scoring never deep-copies the model and never writes into it: every forward goes
through :func:`torch.func.functional_call` with a dictionary that holds detached
parameters, *cloned* buffers (so that BatchNorm's in-place running-statistics update
lands in the clone) and, for every target, the weight and mask being scored.
:func:`preserved_state` restores what a forward can still touch: module modes, the
global RNG state (dropout), and the plain ``weight`` attribute that
``torch.nn.utils.prune``'s forward pre-hook re-assigns on every call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import prune

from ..errors import BatchShapeError
from .inputs import check_integer_batch, dtype_problem
from .targets import Target

TensorDict = dict[str, torch.Tensor]


def _pruned_tensor_names(model: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                yield module, hook._tensor_name


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore module modes, the global RNG state and prune-hook attributes on exit.

    Parameters and buffers are not snapshotted: scoring code must never write them
    (it substitutes clones through :class:`FunctionalModel`).
    """
    modes = [(m, m.training) for m in model.modules()]
    hook_attributes = [(m, n, m.__dict__.get(n)) for m, n in _pruned_tensor_names(model)]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for module, name, value in hook_attributes:
            if value is None:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = value
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


@contextlib.contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode inside; every submodule's ``training`` flag restored on exit (``None`` is skipped).

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Dropout()).train()
        >>> with eval_mode(net):
        ...     net.training
        False
        >>> net.training
        True
    """
    present = [m for m in modules if m is not None]
    modes = [(m, m.training) for module in present for m in module.modules()]
    try:
        for module in present:
            module.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def parameter_keys(model: nn.Module) -> dict[int, str]:
    """The ``functional_call`` key of every parameter, by tensor identity.

    A tied parameter (one tensor under several names) has one key, its first name: passing
    it under that name substitutes it everywhere (``functional_call``'s ``tie_weights``).

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
        >>> net[1].weight = net[0].weight
        >>> sorted(parameter_keys(net).values())
        ['0.weight']
    """
    return {id(p): name for name, p in model.named_parameters()}


class FunctionalModel:
    """A stateless view of a model whose target weights and masks are inputs.

    ``fm(x, weights, masks)`` runs ``model(x)`` with every target's effective weight
    equal to ``weights[i] * masks[i]`` (for a target already pruned by torch this is
    done by torch's own hook from the substituted ``weight_orig`` and ``weight_mask``),
    every other parameter detached, and every buffer cloned. Gradients flow to whatever
    the caller passes in with ``requires_grad``. A tied target (one tensor under several
    names) is substituted once, under its first name, and applies under all of them.

    Args:
        model: the network (not modified).
        targets: the resolved targets.
        transform: optional map applied to every non-target parameter and buffer,
            ``(name, tensor) -> tensor`` (e.g. absolute values for SynFlow, a dtype cast).

    Examples:
        >>> import torch_prune_ext as tpe
        >>> from torch_prune_ext.core.targets import resolve_targets
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
        >>> targets = resolve_targets(net)
        >>> fm = FunctionalModel(net, targets)
        >>> w = torch.ones(2, 3)
        >>> fm(torch.ones(1, 3), [w], [torch.tensor([[1., 0., 0.], [1., 1., 1.]])])
        tensor([[1., 3.]])
    """

    def __init__(
        self,
        model: nn.Module,
        targets: Sequence[Target],
        transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.targets = list(targets)
        keys = parameter_keys(model)
        #: per target: the one ``functional_call`` key of its tensor (a tied tensor has one, its first name)
        self.target_keys = [keys[id(t.raw)] for t in self.targets]
        self._mask_keys = [t.mask_keys for t in self.targets]
        target_keys = set(self.target_keys) | {key for keys_ in self._mask_keys for key in keys_}
        identity = transform or (lambda name, tensor: tensor)
        self._params: TensorDict = {
            name: identity(name, p.detach())
            for name, p in model.named_parameters()
            if name not in target_keys
        }
        self._buffers: TensorDict = {
            name: identity(name, b.detach())
            for name, b in model.named_buffers()
            if name not in target_keys
        }

    def tensors(
        self, weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], overrides: TensorDict | None = None
    ) -> TensorDict:
        """The ``functional_call`` dictionary for these target weights and masks.

        ``overrides`` replaces further (non-target) entries by key, e.g. redrawn weights.
        """
        tensors = dict(self._params)
        tensors.update({name: b.clone() for name, b in self._buffers.items()})
        for target, key, mask_keys, weight, mask in zip(self.targets, self.target_keys, self._mask_keys, weights,
                                                        masks, strict=True):
            tensors[key] = weight if target.is_pruned else weight * mask
            tensors.update(dict.fromkeys(mask_keys, mask))  # a tied tensor's mask under each of its names
        tensors.update(overrides or {})
        return tensors

    def __call__(
        self,
        x: torch.Tensor,
        weights: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor],
        overrides: TensorDict | None = None,
    ) -> torch.Tensor:
        tensors = self.tensors(weights, masks, overrides)
        check_integer_batch(self.model, x)
        try:
            return functional_call(self.model, tensors, (x,), strict=False)
        except RuntimeError as error:
            dtype_hint = dtype_problem(self.model, x)
            if dtype_hint is not None:
                raise BatchShapeError(f"{dtype_hint} ({error})") from error
            if not _looks_like_shape_error(error):
                raise
            raise BatchShapeError(
                f"The model cannot run on a batch of shape {tuple(x.shape)} ({error}). "
                "Pass batches shaped like the model's input (N, *input_shape), or the right input_shape=."
            ) from error


_SHAPE_WORDS = ("shape", "size", "dimension", "channels", "mat1", "expected input", "Expected")


def _looks_like_shape_error(error: RuntimeError) -> bool:
    text = str(error)
    return any(word in text for word in _SHAPE_WORDS)
