"""Image transforms from timm: eval (model's own config or the URL legacy preset), train, SSL.

``model_or_data_config`` is a model (timm, :class:`~uncertain_repr.Uncertainizer` or any module
with a ``pretrained_cfg``) or a data-config dict (``input_size``, ``interpolation``, ``mean``,
``std``, ``crop_pct``, ``crop_mode`` or any other key of a timm ``pretrained_cfg``; missing keys
take timm's defaults, an unknown key is a ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from torch import nn

from ..pretrained import LEGACY_DATA_CONFIG, legacy_data_config

ModelOrConfig = Union[nn.Module, Mapping[str, Any], None]


def resolve_data_config(
    model_or_data_config: ModelOrConfig = None, *, legacy: bool = False, img_size: Optional[int] = None
) -> Dict[str, Any]:
    """The data config to build transforms from.

    ``legacy=True`` returns the original code's preprocessing (:data:`LEGACY_DATA_CONFIG`; a
    fixed-size model keeps its own size, see :func:`~uncertain_repr.pretrained.legacy_data_config`); ``img_size``
    overrides the square input size (the original's ``--img-size``, e.g. 256 for ViT-M).
    """
    import timm.data

    is_model = isinstance(model_or_data_config, nn.Module)
    if not (is_model or isinstance(model_or_data_config, Mapping) or (legacy and model_or_data_config is None)):
        raise TypeError(
            "model_or_data_config must be an nn.Module or a data-config dict (or pass legacy=True), "
            f"got {type(model_or_data_config).__name__}"
        )
    if legacy:
        if not is_model and model_or_data_config is not None:
            raise ValueError(
                "legacy=True ignores a data-config dict (it is the original's fixed preset); pass the dict "
                "without legacy=True, or legacy=True with a model (a fixed-size model keeps its size) or alone"
            )
        config = legacy_data_config(model_or_data_config) if is_model else dict(LEGACY_DATA_CONFIG)
    elif is_model:
        config = timm.data.resolve_model_data_config(model_or_data_config)
    else:
        # every key of a timm pretrained_cfg (the data-config keys among them) is read or harmless;
        # timm would drop any other key (a typo such as img_size) and use its default instead
        unread = sorted(set(model_or_data_config) - {f.name for f in dataclasses.fields(timm.models.PretrainedCfg)})
        if unread:
            raise ValueError(
                f"model_or_data_config has keys timm does not read: {unread}; a data config takes "
                "input_size, interpolation, mean, std, crop_pct, crop_mode (or pass a model's pretrained_cfg)"
            )
        # timm asserts a non-empty config; it reads a None value as missing, so {} gets all its defaults
        config = timm.data.resolve_data_config(pretrained_cfg=dict(model_or_data_config) or {"input_size": None})
    if img_size is not None:
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
            raise ValueError(f"img_size must be a positive int, got {img_size!r}")
        config["input_size"] = (config["input_size"][0], img_size, img_size)
    return config


def _transform_config(model_or_data_config: ModelOrConfig, legacy: bool, img_size: Optional[int]) -> Dict[str, Any]:
    """:func:`resolve_data_config` for a transform, warning where a model without ``pretrained_cfg`` gets
    timm's ImageNet defaults (they may be wrong for it)."""
    if isinstance(model_or_data_config, nn.Module) and not legacy and not getattr(model_or_data_config, "pretrained_cfg", None):
        warnings.warn(
            f"{type(model_or_data_config).__name__} has no pretrained_cfg: its images are preprocessed with timm's "
            "defaults (224 px, crop_pct 0.875, ImageNet mean/std); if the backbone expects other inputs, pass "
            "Uncertainizer(..., pretrained_cfg={'input_size': (3, H, W), 'mean': ..., 'std': ...})",
            UserWarning,
            stacklevel=3,
        )
    return resolve_data_config(model_or_data_config, legacy=legacy, img_size=img_size)


def _size_and_norm(config: Mapping[str, Any]) -> Dict[str, Any]:
    return {"input_size": config["input_size"], "mean": config["mean"], "std": config["std"]}


def eval_transform(
    model_or_data_config: ModelOrConfig = None, *, legacy: bool = False, img_size: Optional[int] = None
) -> Callable:
    """PIL image -> normalised ``[C, H, W]``: resize to ``size / crop_pct``, center crop, normalise."""
    import timm.data

    config = _transform_config(model_or_data_config, legacy, img_size)
    return timm.data.create_transform(
        **_size_and_norm(config),
        interpolation=config["interpolation"],
        crop_pct=config["crop_pct"],
        crop_mode=config.get("crop_mode"),
        is_training=False,
    )


def train_transform(
    model_or_data_config: ModelOrConfig = None,
    *,
    legacy: bool = False,
    img_size: Optional[int] = None,
    scale: Tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    color_jitter: float = 0.4,
    blur_prob: float = 0.0,
) -> Callable:
    """Supervised training augmentation (url-spec §4.6): RandomResizedCrop(``scale``, ratio 3/4-4/3,
    bilinear or bicubic at random), horizontal flip, ColorJitter(0.4, 0.4, 0.4), optional blur."""
    import timm.data

    return timm.data.create_transform(
        **_size_and_norm(_transform_config(model_or_data_config, legacy, img_size)),
        is_training=True,
        scale=scale,
        hflip=hflip,
        color_jitter=color_jitter,
        gaussian_blur_prob=blur_prob,
        interpolation="random",
    )


def ssl_transform(
    model_or_data_config: ModelOrConfig = None, *, legacy: bool = False, img_size: Optional[int] = None
) -> Callable:
    """One self-supervised view (url-spec §4.6): RandomResizedCrop(0.08-1), hflip, ColorJitter
    (0.4, 0.4, 0.2, 0.1) w.p. 0.8, grayscale w.p. 0.2, Gaussian blur always. Use with :class:`TwoViews`.

    timm's blur has a fixed 23-pixel kernel with sigma in (0.1, 2); the original drew sigma from
    U(0.1, 2) with PIL and flipped last (here the flip comes first; the distribution is the same).
    """
    import timm.data

    return timm.data.create_transform(
        **_size_and_norm(_transform_config(model_or_data_config, legacy, img_size)),
        is_training=True,
        scale=(0.08, 1.0),
        hflip=0.5,
        color_jitter=(0.4, 0.4, 0.2, 0.1),
        color_jitter_prob=0.8,
        grayscale_prob=0.2,
        gaussian_blur_prob=1.0,
        interpolation="random",
    )
