"""What a model reads: floating inputs, or token ids through an input embedding.

A *token model* starts with an ``nn.Embedding``: its first module holding a weight (in
``model.modules()`` order) is an embedding, not a Conv/Linear layer. Data-free methods then
need integer inputs; the rules they follow (see the README's "Your own model"):

* SynFlow: the linearised network reads an all-ones one-hot vector at every position, i.e.
  every embedding lookup returns the sum of the embedding's (absolute, masked) rows
  (:class:`AllOnesEmbedding`): the all-ones input taken in embedding space.
* NTK-SAP: the random input of a draw is token ids drawn uniformly from the vocabulary of the
  input embedding, in the pruning batch's shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import BatchShapeError
from .targets import EMBEDDING_TYPES, is_default_kind


def input_embedding(model: nn.Module) -> nn.Embedding | nn.EmbeddingBag | None:
    """The model's input embedding when it is a token model, else ``None``.

    Examples:
        >>> input_embedding(torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2)))
        Embedding(10, 4)
        >>> input_embedding(torch.nn.Sequential(torch.nn.Linear(4, 2))) is None
        True
    """
    for module in model.modules():
        if isinstance(module, EMBEDDING_TYPES):
            return module
        if is_default_kind(module):
            return None
    return None


def check_integer_batch(model: nn.Module, x: torch.Tensor) -> None:
    """Raise a clear :class:`BatchShapeError` for an integer batch the model cannot read.

    Token ids must lie in ``[0, num_embeddings)`` of the input embedding; a model that starts
    with a Conv/Linear layer needs floating inputs. Nothing to check for floating batches.

    Examples:
        >>> check_integer_batch(torch.nn.Embedding(5, 2), torch.tensor([[0, 7]]))
        Traceback (most recent call last):
        ...
        torch_prune_ext.errors.BatchShapeError: The pruning batch holds token ids in [0, 7], but the input embedding Embedding(5, 2) has 5 rows: ids must lie in [0, 4]. Pass token ids of this model's vocabulary (check the tokenizer and the model's vocab size).
    """
    if x.is_floating_point() or x.is_complex() or x.numel() == 0:
        return
    embedding = input_embedding(model)
    if embedding is None:
        return
    low, high = int(x.min()), int(x.max())
    if low < 0 or high >= embedding.num_embeddings:
        raise BatchShapeError(
            f"The pruning batch holds token ids in [{low}, {high}], but the input embedding {embedding} has "
            f"{embedding.num_embeddings} rows: ids must lie in [0, {embedding.num_embeddings - 1}]. Pass token ids "
            "of this model's vocabulary (check the tokenizer and the model's vocab size)."
        )


def dtype_problem(model: nn.Module, x: torch.Tensor) -> str | None:
    """Why ``x``'s dtype, not its shape, keeps ``model`` from running it (``None``: the dtype is fine)."""
    if x.is_floating_point() or input_embedding(model) is not None:
        return None
    first = next((m for m in model.modules() if is_default_kind(m)), None)
    where = f"whose first layer is a {type(first).__name__}" if first is not None else "that has no input embedding"
    return (
        f"The pruning batch is {x.dtype} (integers), but the model, {where}, needs floating inputs: the dtype is "
        "the problem, not the shape. Pass x.float() (e.g. images scaled to [0, 1]); token ids suit a model that "
        "starts with nn.Embedding."
    )


class AllOnesEmbedding(TorchFunctionMode):
    """Inside, every ``F.embedding`` lookup returns the sum of the weight's rows at every position.

    That is the embedding applied to an all-ones one-hot vector: SynFlow's all-ones input
    in embedding space (the ids themselves are ignored).

    Examples:
        >>> emb = torch.nn.Embedding(3, 2)
        >>> with torch.no_grad():
        ...     _ = emb.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        >>> with AllOnesEmbedding():
        ...     emb(torch.zeros(1, 2, dtype=torch.long)).tolist()
        [[[9.0, 12.0], [9.0, 12.0]]]
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is F.embedding:
            ids, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            return weight.sum(0).expand(*ids.shape, weight.shape[-1])
        return func(*args, **kwargs)
