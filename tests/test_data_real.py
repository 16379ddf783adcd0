"""Readers on the real data under ../shared/data: CIFAR-10H, Tiny ImageNet, ImageNet val 1300."""

from __future__ import annotations

import csv
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import uncertain_repr.data as urd

N = 50


def _decode_members(tar_path, members) -> list:
    """Independent reference: decode tar members with tarfile + PIL."""
    with tarfile.open(tar_path) as tar:
        return [np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")) for m in members]


def test_cifar10h_labels_counts_pixels(shared_data):
    data = shared_data("cifar10_test_jpg", "index.csv").parent.parent
    counts = np.load(shared_data("cifar10h", "cifar10h-counts.npy"))
    with open(data / "cifar10_test_jpg" / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ds = urd.create_dataset("soft/cifar10h", data, "test")  # counts found in the sibling cifar10h/
    assert len(ds) == 10_000 and ds.num_classes == 10 and ds.name == "soft/cifar10h"
    assert ds.labels.tolist() == [int(r["label"]) for r in rows]
    assert torch.equal(ds.soft_labels, torch.from_numpy(counts).float())
    assert ds.labels[:8].tolist() == [3, 8, 8, 0, 6, 6, 1, 6]  # cat ship ship airplane frog frog automobile frog
    direct = urd.create_dataset("soft/cifar10h", data / "cifar10_test_jpg", "test")  # the folder itself
    assert direct.describe(7) == ds.describe(7)
    tar_path = data / "cifar10_test_jpg" / "cifar10_test_jpg.tar"
    with tarfile.open(tar_path) as tar:
        for i in range(N):
            item = ds[i]
            expected = np.asarray(Image.open(io.BytesIO(tar.extractfile(rows[i]["path_in_tar"]).read())).convert("RGB"))
            assert np.array_equal(np.asarray(item["image"]), expected)
            assert item["label"] == int(rows[i]["label"]) and item["index"] == i
            assert item["soft_labels"].tolist() == counts[i].tolist()


def test_cifar10h_counts_argument_and_mismatch(shared_data, tmp_path):
    data = shared_data("cifar10_test_jpg", "index.csv").parent
    counts = shared_data("cifar10h", "cifar10h-counts.npy")
    ds = urd.create_dataset("soft/cifar10h", data, "test", counts=counts)
    assert ds.soft_labels.shape == (10_000, 10)
    short = tmp_path / "short.npy"
    np.save(short, np.load(counts)[:9_999])
    with pytest.raises(ValueError, match=r"short\.npy: expected counts of shape \(10000, 10\) for the 10000 images, got \(9999, 10\)"):
        urd.create_dataset("soft/cifar10h", data, "test", counts=short)
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10H counts file not found: .*nope\.npy"):
        urd.create_dataset("soft/cifar10h", data, "test", counts=tmp_path / "nope.npy")
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 test images not found under .*cifar10_test_jpg/index\.csv"):
        urd.create_dataset("soft/cifar10h", tmp_path, "test", counts=counts)


def test_cifar10h_torchvision_layout(shared_data, tmp_path, monkeypatch):
    """torchvision's cifar-10-batches-py/ (a 10-image test batch; checksum check bypassed)."""
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    pixels = np.arange(10 * 3072, dtype=np.int64).reshape(10, 3072) % 251
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    with open(batches / "test_batch", "wb") as f:
        pickle.dump({"data": pixels.astype(np.uint8), "labels": list(range(9, -1, -1))}, f)
    with open(batches / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["c"] * 10}, f)
    counts = np.load(shared_data("cifar10h", "cifar10h-counts.npy"))[:10]
    np.save(tmp_path / "cifar10h-counts.npy", counts)
    ds = urd.create_dataset("soft/cifar10h", tmp_path, "test")
    assert ds.labels.tolist() == list(range(9, -1, -1))
    expected = pixels[4].reshape(3, 32, 32).transpose(1, 2, 0).astype(np.uint8)
    assert np.array_equal(np.asarray(ds[4]["image"]), expected)
    assert ds[4]["soft_labels"].tolist() == counts[4].tolist()


@pytest.mark.slow
def test_tiny_imagenet200(shared_data):
    folder = shared_data("tiny_imagenet200")
    with open(folder / "index.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
    val = urd.create_dataset("tar/tiny_imagenet200", folder.parent, "val")
    assert len(val) == 10_000 and val.num_classes == 1000 and val.split == "validation"
    assert val.labels.tolist() == [int(r["class_index"]) for r in rows]
    picks = list(range(0, 10_000, 1_000))
    expected = _decode_members(folder / "tiny_imagenet200.tar", [rows[i]["path"] for i in picks])
    for i, reference in zip(picks, expected):
        image = val[i]["image"]
        assert image.mode == "RGB" and image.size == (64, 64)
        assert np.array_equal(np.asarray(image), reference)
    train = urd.create_dataset("tar/tiny_imagenet200", folder, "train")
    assert len(train) == 20_000 and set(train.labels.tolist()) == set(val.labels.tolist())


def test_imagenet_val1300_real_labels(shared_data):
    folder = shared_data("imagenet_val1300")
    with open(folder / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ds = urd.create_dataset("soft/imagenet_val1300", folder.parent, "validation")
    assert len(ds) == 1300 and ds.soft_labels.shape == (1300, 1000)
    assert ds.labels.tolist() == [int(r["class_index"]) for r in rows]
    for i in (0, 5, 1299):
        real = sorted(int(v) for v in rows[i]["real_labels"].split())
        assert torch.nonzero(ds.soft_labels[i]).flatten().tolist() == real
    entropy = ds.metadata["real_soft_entropy"]
    assert int(entropy.isnan().sum()) == 9 and float(entropy[0]) == float(rows[0]["real_soft_entropy"])
    assert ds.subset([3, 1]).metadata["real_soft_entropy"].tolist()[1] == float(rows[1]["real_soft_entropy"])
    (expected,) = _decode_members(folder / "imagenet_val1300.tar", [rows[3]["path"]])
    assert np.array_equal(np.asarray(ds[3]["image"]), expected)


def test_imagenet_sample1000_splits(shared_data):
    folder = shared_data("imagenet_sample1000")
    with open(folder / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    splits = {s: urd.create_dataset("tar/imagenet_sample1000", folder.parent, s) for s in ("train", "validation", "all")}
    assert [len(d) for d in splits.values()] == [900, 100, 1000]
    assert splits["all"].labels.tolist() == [int(r["class_index"]) for r in rows]
    assert all(c % 10 for c in splits["train"].labels.tolist())
    assert sorted(splits["train"].labels.tolist() + splits["validation"].labels.tolist()) == list(range(1000))
    expected = _decode_members(folder / "imagenet_sample1000.tar", [rows[10]["path"]])[0]
    assert np.array_equal(np.asarray(splits["validation"][1]["image"]), expected)
