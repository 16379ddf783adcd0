"""Keyed crops, the crop wrapper, two-view batches, transforms and the loader/samplers."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
from PIL import Image

import uncertain_repr.data as urd

MASK = 2**64 - 1


def _splitmix_reference(seed, key, index) -> float:
    """Independent pure-Python SplitMix64 output number index + 1, top 53 bits -> [0, 1)."""
    text = "\x1f".join([str(seed), *key])
    state = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    z = (state + (index + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    z ^= z >> 31
    return (z >> 11) / 2.0**53


class _Synthetic:
    """An image source of ``n`` distinct synthetic RGB images (``W x H``)."""

    def __init__(self, n, size=(40, 30)):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def describe(self, i):
        return f"synthetic[{i}]"

    def load(self, i):
        w, h = self.size
        rng = np.random.default_rng(i)
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _dataset(n, name="repr/test", split="test", size=(40, 30), transform=None):
    return urd.ImageDataset(
        _Synthetic(n, size), [i % 3 for i in range(n)], name=name, split=split, num_classes=3, transform=transform
    )


def test_crop_fractions_match_reference_and_range():
    idx = [0, 1, 2, 17, 10**9]
    got = urd.crop_fractions(3, "repr/cub", "test", idx, low=0.1, high=0.75)
    expected = [0.1 + 0.65 * _splitmix_reference(3, ("crop", "repr/cub", "test"), i) for i in idx]
    assert got.dtype == torch.float64 and got.tolist() == pytest.approx(expected, abs=0, rel=1e-15)
    many = urd.crop_fractions(0, "repr/cub", "test", range(20_000))
    assert float(many.min()) >= 0.1 and float(many.max()) < 0.75
    assert abs(float(many.mean()) - 0.425) < 0.005  # U(0.1, 0.75): mean 0.425, sd 0.19 / sqrt(20000)
    assert torch.equal(urd.crop_fractions(0, "repr/cub", "test", torch.arange(5)), many[:5])
    # every key component matters
    for other in [(1, "repr/cub", "test"), (0, "repr/cars", "test"), (0, "repr/cub", "validation")]:
        assert not torch.equal(urd.crop_fractions(*other, range(5)), many[:5])


def test_crop_fraction_bad_input():
    with pytest.raises(ValueError, match="0 < low <= high <= 1, got low=0.8, high=0.5"):
        urd.crop_fractions(0, "a", "b", [0], low=0.8, high=0.5)
    with pytest.raises(ValueError, match="indices must be non-negative, got -1"):
        urd.crop_fractions(0, "a", "b", [-1])
    with pytest.raises(TypeError, match="seed must be an int, got float"):
        urd.crop_fractions(0.5, "a", "b", [0])
    with pytest.raises(TypeError, match="indices must be a 1-D sequence of ints"):
        urd.crop_fractions(0, "a", "b", [0.5])


def test_with_crops_independent_of_dataset_size_and_matches_pil():
    small, large = urd.WithCrops(_dataset(10), seed=5), urd.WithCrops(_dataset(1000), seed=5)
    for i in (0, 3, 9):
        a, b = small[i], large[i]
        assert a["crop_fraction"] == b["crop_fraction"]
        assert a["crop_fraction"] == float(urd.crop_fractions(5, "repr/test", "test", [i])[0])
        assert np.array_equal(np.asarray(a["image_cropped"]), np.asarray(b["image_cropped"]))
        # independent reference: side = round(min(W, H) * c), torchvision's centering, PIL bilinear
        image, c = _Synthetic(10).load(i), a["crop_fraction"]
        side = round(30 * c)
        left, top = int(round((40 - side) / 2.0)), int(round((30 - side) / 2.0))
        expected = image.crop((left, top, left + side, top + side)).resize((40, 30), Image.BILINEAR)
        assert np.array_equal(np.asarray(a["image_cropped"]), np.asarray(expected))
        assert np.array_equal(np.asarray(a["image"]), np.asarray(image))
    assert urd.WithCrops(_dataset(10), seed=6)[0]["crop_fraction"] != small[0]["crop_fraction"]


def test_with_crops_applies_transform_after_the_crop():
    t = urd.eval_transform({"input_size": (3, 16, 16), "crop_pct": 1.0, "interpolation": "bilinear"})
    via_dataset = urd.WithCrops(_dataset(4, transform=t))[2]
    via_wrapper = urd.WithCrops(_dataset(4), transform=t)[2]
    raw = urd.WithCrops(_dataset(4))[2]
    for key in ("image", "image_cropped"):
        assert via_dataset[key].shape == (3, 16, 16)
        assert torch.equal(via_dataset[key], via_wrapper[key])
        assert torch.equal(via_dataset[key], t(raw[key]))
    assert via_dataset.keys() == {"image", "image_cropped", "crop_fraction", "label", "index"}
    assert urd.WithCrops(_dataset(4)).num_classes == 3 and len(urd.WithCrops(_dataset(4))) == 4
    batch = torch.utils.data.default_collate([via_dataset, via_wrapper])
    assert batch["image_cropped"].shape == (2, 3, 16, 16) and batch["crop_fraction"].dtype == torch.float64


def test_with_crops_needs_name_and_raw_images():
    with pytest.raises(TypeError, match=r"dataset must have a str \.name"):
        urd.WithCrops(torch.utils.data.TensorDataset(torch.zeros(2)))


def test_two_views_interleaved():
    t = urd.eval_transform({"input_size": (3, 8, 8), "crop_pct": 1.0})
    views = urd.TwoViews(_dataset(5), lambda im: t(im) + torch.rand(1))  # two different draws
    batch = urd.collate_views([views[i] for i in (1, 2, 4)])
    assert batch["image"].shape == (6, 3, 8, 8)
    assert batch["label"].tolist() == [1, 1, 2, 2, 1, 1] and batch["index"].tolist() == [1, 1, 2, 2, 4, 4]
    base = t(_Synthetic(5).load(2))
    assert torch.allclose(batch["image"][2] - batch["image"][2].flatten()[0] + base.flatten()[0], base, atol=1e-6)
    assert not torch.equal(batch["image"][2], batch["image"][3])
    with pytest.raises(TypeError, match="transform must be callable"):
        urd.TwoViews(_dataset(2), None)



def test_collate_views_repeats_every_key_per_view():
    # A str key (collated as a list of B) used to stay B long next to 2B images: row 2k+1 had no path.
    batch = [{"image": torch.full((2, 1), float(i)), "label": i, "path": f"img{i}.png", "meta": {"w": float(i)}}
             for i in (3, 5)]
    out = urd.collate_views(batch)
    assert out["image"].flatten().tolist() == [3, 3, 5, 5] and out["label"].tolist() == [3, 3, 5, 5]
    assert out["path"] == ["img3.png", "img3.png", "img5.png", "img5.png"]
    assert out["meta"]["w"].tolist() == [3, 3, 5, 5]
    cached = urd.collate_views([{"embedding": torch.tensor([[1.0], [2.0]]), "index": 7}])
    assert cached["embedding"].flatten().tolist() == [1, 2] and cached["index"].tolist() == [7, 7]

def test_transforms_legacy_model_and_train():
    import timm
    import timm.data
    from torchvision import transforms as T

    legacy = urd.eval_transform(legacy=True)
    resize, crop = legacy.transforms[0], legacy.transforms[1]
    assert resize.size == 256 and resize.interpolation == T.InterpolationMode.BICUBIC and crop.size == (224, 224)
    assert tuple(legacy.transforms[-1].mean.tolist()) == pytest.approx((0.485, 0.456, 0.406))
    assert urd.eval_transform(legacy=True, img_size=256).transforms[0].size == 292  # floor(256 / 0.875)
    model = timm.create_model("test_vit")
    image = _Synthetic(1, (50, 70)).load(0)
    reference = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    assert torch.equal(urd.eval_transform(model)(image), reference(image))
    from uncertain_repr.images import eval_transform as predict_transform

    assert predict_transform is urd.eval_transform
    train = urd.train_transform(legacy=True)
    rrc = train.transforms[0]
    assert rrc.scale == (0.08, 1.0) and rrc.size == (224, 224) and len(rrc.interpolation) == 2
    assert train.transforms[1].p == 0.5
    jitter = train.transforms[2]
    assert jitter.brightness == (0.6, 1.4) and jitter.saturation == (0.6, 1.4) and jitter.hue is None
    assert urd.train_transform(legacy=True)(image).shape == (3, 224, 224)
    assert urd.ssl_transform(legacy=True, img_size=32)(image).shape == (3, 32, 32)
    with pytest.raises(TypeError, match="model_or_data_config must be an nn.Module or a data-config dict"):
        urd.eval_transform("resnet50")
    with pytest.raises(ValueError, match="img_size must be a positive int, got 0"):
        urd.eval_transform(legacy=True, img_size=0)


def test_data_config_dict_keys_are_read_or_refused():
    import timm

    # A key timm does not read used to be dropped: {"img_size": 96} gave the default 224-px transform.
    with pytest.raises(ValueError, match=r"keys timm does not read: \['crop_percent', 'img_size'\]"):
        urd.eval_transform({"img_size": 96, "crop_percent": 1.0, "mean": (0.5, 0.5, 0.5)})
    with pytest.raises(ValueError, match=r"model_or_data_config.*'size'"):
        urd.train_transform({"size": 96})
    config = {"input_size": (3, 96, 96), "mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.5), "crop_pct": 0.5,
              "interpolation": "bilinear"}
    resize, crop, _, norm = urd.eval_transform(config).transforms
    assert resize.size == 192 and crop.size == (96, 96) and resize.interpolation.value == "bilinear"
    assert norm.mean.tolist() == pytest.approx([0.1, 0.2, 0.3]) and norm.std.tolist() == pytest.approx([0.5] * 3)
    model = timm.create_model("test_vit")  # a model's whole pretrained_cfg (url, license, ...) is a valid dict
    image = _Synthetic(1, (50, 70)).load(0)
    assert torch.equal(urd.eval_transform(dict(model.pretrained_cfg))(image), urd.eval_transform(model)(image))


def test_empty_data_config_takes_timm_defaults():
    # {} (every key missing) used to fail inside timm with a bare AssertionError
    assert urd.resolve_data_config({}) == {"input_size": (3, 224, 224), "interpolation": "bicubic",
                                           "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                                           "crop_pct": 0.875, "crop_mode": "center"}
    resize, crop, _, _ = urd.eval_transform({}).transforms
    assert resize.size == 256 and crop.size == (224, 224)  # floor(224 / 0.875)
    assert urd.train_transform({})(_Synthetic(1, (50, 70)).load(0)).shape == (3, 224, 224)


def test_legacy_refuses_what_it_would_ignore():
    # legacy=True used to drop a data-config dict (or any non-model) and return the 224-px preset.
    with pytest.raises(ValueError, match=r"legacy=True ignores a data-config dict"):
        urd.eval_transform({"input_size": (3, 96, 96)}, legacy=True)
    with pytest.raises(TypeError, match="model_or_data_config must be an nn.Module or a data-config dict"):
        urd.ssl_transform("resnet50", legacy=True)
    assert urd.resolve_data_config(legacy=True)["input_size"] == (3, 224, 224)


@pytest.mark.parametrize("n, world", [(0, 2), (1, 3), (10, 3), (11, 4), (7, 1)])
def test_exact_shard_sampler_covers_once(n, world):
    shards = [list(urd.ExactShardSampler(n, rank=r, world_size=world)) for r in range(world)]
    assert sum(shards, []) == list(range(n))  # rank order = dataset order, each index once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(urd.ExactShardSampler(n, rank=r, world_size=world)) for r in range(world)] == list(map(len, shards))


def test_distributed_sampler_pads_unlike_exact_sampler():
    from torch.utils.data import DistributedSampler

    padded = [list(DistributedSampler(range(10), num_replicas=4, rank=r, shuffle=False)) for r in range(4)]
    assert sum(map(len, padded)) == 12 and sorted(sum(padded, [])).count(0) == 2  # why eval needs the exact sampler
    with pytest.raises(ValueError, match="need 0 <= rank < world_size, got rank=2, world_size=2"):
        urd.ExactShardSampler(10, rank=2, world_size=2)
    with pytest.raises(TypeError, match="dataset_or_length must be a dataset or an int length, got a bool"):
        urd.ExactShardSampler(True, rank=0, world_size=1)  # was taken as a length of 1


def test_create_loader_defaults_and_seed():
    ds = _dataset(12, transform=urd.eval_transform({"input_size": (3, 8, 8), "crop_pct": 1.0}))
    loader = urd.create_loader(ds, 5, shuffle=False)
    cpus = len(os.sched_getaffinity(0))
    assert loader.num_workers == min(4, cpus) == urd.default_num_workers()
    assert loader.persistent_workers == (loader.num_workers > 0)
    assert loader.pin_memory == torch.cuda.is_available()
    assert isinstance(loader.sampler, torch.utils.data.SequentialSampler) and len(loader) == 3
    order = lambda seed: [i for b in urd.create_loader(ds, 4, shuffle=True, num_workers=0, seed=seed) for i in b["index"].tolist()]  # noqa: E731
    assert order(1) == order(1) and sorted(order(1)) == list(range(12)) and order(1) != order(2)
    batches = list(urd.create_loader(ds, 5, shuffle=False, num_workers=0, drop_last=True))
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert batches[0]["image"].shape == (5, 3, 8, 8)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        urd.create_loader(ds, 0, shuffle=False)
    with pytest.raises(TypeError, match="shuffle must be a bool"):
        urd.create_loader(ds, 2, shuffle=None)
    with pytest.raises(ValueError, match="num_workers must be an int >= 0, got -1"):
        urd.create_loader(ds, 2, shuffle=False, num_workers=-1)



def test_evaluation_loader_refuses_drop_last_under_distributed(monkeypatch):
    # 1 process, N=10, B=3, drop_last: items 0..8. Two ranks (blocks 0..4, 5..9) each dropped their own
    # partial batch: items 0,1,2,5,6,7 -- other numbers than the 1-process run, without an error.
    import torch.distributed as dist

    ds = _dataset(10)
    assert len(list(urd.create_loader(ds, 3, shuffle=False, num_workers=0, drop_last=True).sampler)) == 10
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    with pytest.raises(ValueError, match=r"drop_last=True with shuffle=False under torch.distributed \(2 processes\)"):
        urd.create_loader(ds, 3, shuffle=False, num_workers=0, drop_last=True)
    assert list(urd.create_loader(ds, 3, shuffle=False, num_workers=0).sampler) == [5, 6, 7, 8, 9]

def test_loader_with_workers_reads_tar_per_process(shared_data):
    ds = urd.create_dataset("soft/cifar10h", shared_data("cifar10_test_jpg").parent, "test")
    ds = ds.subset(range(24))
    ds.images.load(0)  # the parent opened its handle; forked workers must reopen their own
    ds.transform = urd.eval_transform({"input_size": (3, 32, 32), "crop_pct": 1.0})
    got = [b for b in urd.create_loader(ds, 8, shuffle=False, num_workers=2)]
    assert torch.cat([b["index"] for b in got]).tolist() == list(range(24))
    assert torch.equal(got[2]["image"][3], ds[19]["image"])
    import pickle  # spawn-started workers receive a pickled dataset: the open handle is not part of it

    clone = pickle.loads(pickle.dumps(ds))
    assert clone.images._file is None and torch.equal(clone[5]["image"], ds[5]["image"])


def _distributed_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ds = _dataset(11, transform=urd.eval_transform({"input_size": (3, 4, 4), "crop_pct": 1.0}))
    evaluation = urd.create_loader(ds, 3, shuffle=False, num_workers=0)
    training = urd.create_loader(ds, 3, shuffle=True, num_workers=0, seed=4)
    seen = {
        "eval": [i for b in evaluation for i in b["index"].tolist()],
        "train": [i for b in training for i in b["index"].tolist()],
        "eval_sampler": type(evaluation.sampler).__name__,
        "train_sampler": type(training.sampler).__name__,
    }
    gathered = [None] * world
    dist.all_gather_object(gathered, seen)
    if rank == 0:
        torch.save(gathered, os.path.join(out_dir, "seen.pt"))
    dist.destroy_process_group()


@pytest.mark.distributed
def test_create_loader_two_process_gloo(tmp_path):
    import torch.multiprocessing as mp

    args = (2, str(tmp_path / "init"), str(tmp_path))
    mp.start_processes(_distributed_worker, args=args, nprocs=2, join=True, start_method="fork")
    seen = torch.load(tmp_path / "seen.pt", weights_only=True)
    assert [s["eval_sampler"] for s in seen] == ["ExactShardSampler"] * 2
    assert [s["train_sampler"] for s in seen] == ["DistributedSampler"] * 2
    assert seen[0]["eval"] + seen[1]["eval"] == list(range(11))  # exactly once, in order
    train = seen[0]["train"] + seen[1]["train"]
    assert len(train) == 12 and set(train) == set(range(11))  # DistributedSampler pads 11 -> 12


def test_a_model_without_pretrained_cfg_is_warned_about_timm_defaults():
    import warnings

    import timm

    import uncertain_repr as ur

    body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    plain = ur.Uncertainizer(body, "embed-norm", embed_dim=8)
    for make in (urd.eval_transform, urd.train_transform, urd.ssl_transform):
        with pytest.warns(UserWarning, match="Uncertainizer has no pretrained_cfg: .*timm's defaults"):
            make(plain)
    # what it warns about is true: the transform is timm's 224-px default
    with pytest.warns(UserWarning):
        assert urd.eval_transform(plain)(Image.new("RGB", (300, 400))).shape == (3, 224, 224)
    told = ur.Uncertainizer(body, "embed-norm", embed_dim=8, pretrained_cfg={"input_size": (3, 64, 64)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert urd.eval_transform(told)(Image.new("RGB", (300, 400))).shape == (3, 64, 64)
        urd.eval_transform(timm.create_model("test_resnet", pretrained=False))
        urd.eval_transform(plain, legacy=True)  # the original's fixed preset: nothing is guessed
