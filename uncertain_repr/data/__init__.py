"""Datasets, splits, soft labels, transforms and crops of the URL benchmark (optional submodule).

    import uncertain_repr.data as urd

    ds = urd.create_dataset("repr/cub", "/data", "test", transform=urd.eval_transform(model))
    loader = urd.create_loader(ds, 64, shuffle=False)
    for batch in loader:  # {"image": [B, C, H, W], "label": [B], "index": [B]}
        ...

Every dataset is a map-style ``torch.utils.data.Dataset`` of dicts (see :class:`ImageDataset`).
Not imported by ``import uncertain_repr``.
"""

from . import annotations, cifar10h, folder, idx, imagenet_subsets, retrieval, vtab  # noqa: F401  (register readers)
from .crops import WithCrops, center_crop_resize, crop_fractions
from .dataset import DatasetWrapper, ImageDataset, few_shot_indices
from .loader import ExactShardSampler, create_loader, default_num_workers
from .registry import canonical_split, create_dataset, list_datasets, register_dataset
from .sources import FileImages, ImageDecodeError, TarImages, TorchvisionImages
from .transforms import LEGACY_DATA_CONFIG, eval_transform, resolve_data_config, ssl_transform, train_transform
from .views import TwoViews, collate_views

__all__ = [
    "DatasetWrapper",
    "ExactShardSampler",
    "FileImages",
    "ImageDataset",
    "ImageDecodeError",
    "LEGACY_DATA_CONFIG",
    "TarImages",
    "TorchvisionImages",
    "TwoViews",
    "WithCrops",
    "canonical_split",
    "center_crop_resize",
    "collate_views",
    "create_dataset",
    "create_loader",
    "crop_fractions",
    "default_num_workers",
    "eval_transform",
    "few_shot_indices",
    "list_datasets",
    "register_dataset",
    "resolve_data_config",
    "ssl_transform",
    "train_transform",
]
