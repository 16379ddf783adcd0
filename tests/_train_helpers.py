"""Tiny synthetic data and models shared by the cache and training tests."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

import uncertain_repr as ur

IMG = 32
NUM_CLASSES = 10


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test (autouse where imported): on 2 busy cores one thread is ~10x faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Small settings of each method tiny_model builds (method_args override them).
TINY_METHOD_ARGS = {
    "pred-net": {"width": 32, "depth": 1},
    "sngp": {"num_inducing": 32, "gp_input_normalization": True, "gp_kernel_scale": 64.0},
}


def tiny_model(seed: int = 0, method: str = "pred-net", **method_args) -> ur.Uncertainizer:
    """test_vit at 32 px (4 patches, D = 64) with a 10-class head and a small ``method``; savable."""
    torch.manual_seed(seed)
    return ur.Uncertainizer(
        "test_vit", method, **{**TINY_METHOD_ARGS[method], **method_args},
        backbone_args={"num_classes": NUM_CLASSES, "img_size": IMG,
                       "pretrained_cfg_overlay": {"input_size": [3, IMG, IMG]}},
    )


class SyntheticImages(Dataset):
    """Seeded random images following the data contract; a random flip + noise "augmentation"
    drawn from the global torch RNG (as timm transforms do)."""

    name, split = "synthetic", "train"
    transform = "RandomFlip+Noise(0.1)"

    def __init__(self, n: int = 48, soft: bool = False, fail_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(123)
        self.images = torch.randn(n, 3, IMG, IMG, generator=g)
        self.labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        self.soft = torch.rand(n, NUM_CLASSES, generator=g) * 5 if soft else None
        self.fail_at = fail_at  # raise once when this index is read (a simulated crash)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if self.fail_at is not None and i == self.fail_at:
            self.fail_at = None
            raise RuntimeError(f"simulated crash at index {i}")
        x = self.images[i]
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        item = {"image": x + 0.1 * torch.randn_like(x), "label": int(self.labels[i]), "index": i}
        if self.soft is not None:
            item["soft_labels"] = self.soft[i]
        return item
