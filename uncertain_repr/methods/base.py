"""The interface every uncertainty method implements."""

from __future__ import annotations

from typing import ClassVar, Optional, Tuple

import torch
from torch import nn

#: layers a classifier may have around its ``nn.Linear`` without changing what the Linear sees in eval mode
#: (its widths are read through them, and its weight rows are directions in the embedding space)
CLASSIFIER_PASS_THROUGH = (nn.Dropout, nn.Identity, nn.Flatten)


class UncertaintyMethod(nn.Module):
    """Computes one uncertainty per sample from an embedding ``[B, D]`` (and the classifier).

    A method never knows which backbone it sits on. Subclasses implement
    :meth:`uncertainty`; methods that produce their own logits (ensembles, MC dropout, ...)
    override :meth:`forward`. Non-trainable state belongs in buffers, never in parameters with
    ``requires_grad=False``, so that freezing and unfreezing cannot overwrite it.

    Args:
        embed_dim: width ``D`` of the embedding (``None`` only for methods with
            ``needs_embed_dim = False`` on a backbone whose width is unknown).
        num_classes: number of logits ``C`` of the classifier (0 if there is none, ``None`` if unknown).
    """

    name: ClassVar[str] = ""
    needs_logits: ClassVar[bool] = False
    #: False for methods that size nothing by ``D`` (``embed-norm``, ``constant``, the softmax
    #: baselines): ``Uncertainizer`` then wraps a plain module without knowing its width.
    needs_embed_dim: ClassVar[bool] = True
    #: True when the method reads the backbone itself (hooked layers, stochastic re-runs): the model
    #: then refuses cached embeddings and calls ``forward(..., reembed=fn)``, where ``fn()`` runs the
    #: backbone on the same images again and returns a fresh embedding ``[B, D]`` (the buffers of its
    #: training-mode modules, BatchNorm statistics, are left as the embedding pass left them).
    needs_images: bool = False

    def __init__(self, embed_dim: Optional[int], num_classes: Optional[int] = 0) -> None:
        super().__init__()
        self.embed_dim = None if embed_dim is None else int(embed_dim)
        self.num_classes = None if num_classes is None else int(num_classes)

    def attach(self, backbone: nn.Module, classifier: Optional[nn.Module] = None) -> None:
        """Called once by ``Uncertainizer`` with the backbone and its classifier (or ``None``), e.g. to
        register hooks or to initialise heads from the classifier. Default: nothing.

        Whatever it changes must be deterministic, so that rebuilding a model and loading its
        state dict finds the same keys."""

    def begin_epoch(self) -> None:
        """Called by :func:`~uncertain_repr.train.fit` before every training epoch (also the first
        epoch after a resume), e.g. to reset statistics that cover one epoch. Default: nothing."""

    def uncertainty(self, embedding: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
        """Uncertainty ``[B]`` (finite, any float dtype; ``Uncertainizer`` returns it as float32) from
        ``embedding [B, D]`` and ``logits [B, C]`` (or ``None``)."""
        raise NotImplementedError

    def forward(
        self, embedding: torch.Tensor, classifier: Optional[nn.Module], *, stopgrad: bool = False
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Return ``(uncertainty [B], logits [B, C] or None)``.

        With ``stopgrad`` the uncertainty is computed from detached inputs, so its loss cannot
        change the backbone or the classifier; the logits keep their gradient.
        """
        logits = classifier(embedding) if classifier is not None else None
        if self.needs_logits and logits is None:
            raise ValueError(f"method {self.name!r} needs logits, but the backbone has no classifier")
        if stopgrad:
            unc = self.uncertainty(embedding.detach(), None if logits is None else logits.detach())
        else:
            unc = self.uncertainty(embedding, logits)
        return unc, logits
