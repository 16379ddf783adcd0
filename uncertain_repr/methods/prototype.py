"""``prototype-cosine``: how far the embedding points from its predicted class's weight vector.

Needs no training, only the classifier: ``u = 1 - cos(e, w_k)`` with ``k = argmax logits`` and
``w_k`` the row of the classifier's ``nn.Linear`` for class ``k``, in ``[0, 2]``. 1-NN retrieval by
cosine similarity succeeds when an embedding lies close to the other embeddings of its class; the
class's weight row is the classifier's summary of that direction. Our extension beyond the papers.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ._registry import register_method
from .base import CLASSIFIER_PASS_THROUGH, UncertaintyMethod


def classifier_linear(classifier: Optional[nn.Module]) -> nn.Linear:
    """The ``nn.Linear`` of a classifier that is one, or an ``nn.Sequential`` of exactly one around
    dropout/identity/flatten layers; a ``ValueError`` for anything else (its weight rows would not be
    directions in the embedding space)."""
    layers = list(classifier) if isinstance(classifier, nn.Sequential) else [classifier]
    linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
    if len(linears) != 1 or not all(isinstance(layer, (nn.Linear,) + CLASSIFIER_PASS_THROUGH) for layer in layers):
        raise ValueError(
            "prototype-cosine needs a classifier that is an nn.Linear (or an nn.Sequential of one around "
            f"dropout/identity/flatten layers), got {type(classifier).__name__ if classifier is not None else None}"
        )
    return linears[0]


def prototype_distance(embedding: torch.Tensor, logits: torch.Tensor, linear: nn.Linear, *, detach: bool = False) -> torch.Tensor:
    """``1 - cos(e, w_k)`` ``[B]`` in float32, for ``embedding [B, D]``, ``logits [B, C]`` and the classifier's
    ``linear`` (``weight [C, D]``), ``k = argmax logits``; a zero vector has cosine 0 (distance 1)."""
    if linear.weight.shape != (logits.shape[-1], embedding.shape[-1]):
        raise ValueError(
            f"the classifier's weight is {tuple(linear.weight.shape)}, but the logits are {tuple(logits.shape)} "
            f"and the embedding {tuple(embedding.shape)}"
        )
    weight = linear.weight.detach() if detach else linear.weight
    rows = weight[logits.argmax(dim=-1)].float()
    return 1.0 - nn.functional.cosine_similarity(embedding.float(), rows, dim=-1, eps=1e-12)


def classify(
    embedding: torch.Tensor, classifier: Optional[nn.Module], *, stopgrad: bool = False
) -> Tuple[nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(linear, embedding, logits, logits [B, C])``: the classifier's :func:`classifier_linear`, the embedding and
    logits an uncertainty reads (detached with ``stopgrad``), and the logits with their gradient."""
    linear = classifier_linear(classifier)
    logits = classifier(embedding)
    if stopgrad:
        return linear, embedding.detach(), logits.detach(), logits
    return linear, embedding, logits, logits


@register_method("prototype-cosine")
class PrototypeCosine(UncertaintyMethod):
    """``u = 1 - cos(e, w_k)``, ``k`` the predicted class, ``w_k`` its classifier weight row; in ``[0, 2]``."""

    needs_logits = True
    needs_embed_dim = False

    def uncertainty(self, embedding: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        raise ValueError("prototype-cosine needs the classifier's weights: call method(embedding, classifier)")

    def forward(
        self, embedding: torch.Tensor, classifier: Optional[nn.Module], *, stopgrad: bool = False
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        linear, source, source_logits, logits = classify(embedding, classifier, stopgrad=stopgrad)
        return prototype_distance(source, source_logits, linear, detach=stopgrad), logits
