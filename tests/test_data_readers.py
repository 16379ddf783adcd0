"""Readers on generated fixture folders: exact split membership, labels, sizes, and bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import uncertain_repr.data as urd
from uncertain_repr.data import vtab
from uncertain_repr.data.retrieval import half_split


def _png(path: Path, value: int = 0, size=(6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value % 256, 7, 9)).save(path)


def _names(ds) -> list:
    return [Path(ds.describe(i)).name for i in range(len(ds))]


def test_import_uncertain_repr_does_not_load_data():
    import subprocess

    code = "import sys, uncertain_repr; assert 'uncertain_repr.data' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "n, train",
    [(1, []), (3, [0]), (4, [0, 3]), (5, [0, 4]), (6, [0, 2, 5]), (7, [0, 3, 6])],  # 6: round(2.5) = 2
)
def test_half_split_hand_computed(n, train):
    t, v = half_split(n)
    assert t.tolist() == train
    assert v.tolist() == [i for i in range(n) if i not in train]


@pytest.fixture
def cub_root(tmp_path):
    counts = {"001.Alpha": 6, "002.Beta": 5, "003.Gamma": 3, "004.Delta": 4}
    for cls, n in counts.items():
        for k in range(n):
            _png(tmp_path / "cub" / "images" / cls / f"{cls[4:]}_{k}.jpg", k)
    (tmp_path / "cub" / "images" / "001.Alpha" / "._Alpha_0.jpg").write_bytes(b"junk")  # macOS fork: skipped
    return tmp_path


def test_cub_splits_exact(cub_root):
    get = lambda split: urd.create_dataset("repr/cub", cub_root, split)  # noqa: E731
    train = get("train")
    assert _names(train) == ["Alpha_0.jpg", "Alpha_2.jpg", "Alpha_5.jpg", "Beta_0.jpg", "Beta_4.jpg"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1] and train.num_classes == 2
    val = get("val")
    assert val.split == "validation"
    assert _names(val) == ["Alpha_1.jpg", "Alpha_3.jpg", "Alpha_4.jpg", "Beta_1.jpg", "Beta_2.jpg", "Beta_3.jpg"]
    test = get("test")
    assert test.labels.tolist() == [2, 2, 2, 3, 3, 3, 3] and test.num_classes == 4
    assert test.classes[2] == "003.Gamma"
    tot, tet = get("trainontest"), get("testontest")
    assert _names(tot) == ["Gamma_0.jpg", "Gamma_2.jpg", "Delta_0.jpg", "Delta_2.jpg"]
    assert tot.labels.tolist() == [0, 0, 1, 1]
    assert _names(tet) == ["Gamma_1.jpg", "Delta_1.jpg", "Delta_3.jpg"] and tet.labels.tolist() == [0, 1, 1]
    item = test[4]
    assert item["label"] == 3 and item["index"] == 4 and item["image"].size == (6, 4) and item["image"].mode == "RGB"
    assert torch.equal(test.labels, torch.tensor([test[i]["label"] for i in range(len(test))]))


def test_cars_classes_sorted_by_string(tmp_path):
    for cls, n in {"acura 2001": 2, "Zed 1999": 3, "BMW 3 Series Wagon 2012": 4, "Audi A4 2010": 2}.items():
        for k in range(n):
            _png(tmp_path / "cars" / "images" / cls / f"{k:05d}.jpg")
    # Python string order: "Audi..." < "BMW..." < "Zed..." < "acura..."
    train = urd.create_dataset("repr/cars", tmp_path, "train")
    assert train.labels.tolist() == [0, 1, 1] and train.classes == ["Audi A4 2010", "BMW 3 Series Wagon 2012"]
    test = urd.create_dataset("repr/cars", tmp_path, "test")
    assert test.labels.tolist() == [2, 2, 2, 3, 3]
    assert [Path(test.describe(i)).parent.name for i in (0, 3)] == ["Zed 1999", "acura 2001"]


def _sop_root(tmp_path: Path) -> Path:
    base = tmp_path / "online_products"
    train_rows = [  # class_id, super_class_id, path; chair appears first
        (5, 2, "chair_final/c5_a.JPG"),
        (2, 1, "bicycle_final/b2_a.JPG"),
        (1, 1, "bicycle_final/b1_a.JPG"),
        (4, 2, "chair_final/c4_a.JPG"),
        (3, 1, "bicycle_final/b3_a.JPG"),
        (5, 2, "chair_final/c5_b.JPG"),
        (1, 1, "bicycle_final/b1_b.JPG"),
    ]
    test_rows = [(6, 1, "bicycle_final/b6_a.JPG"), (7, 2, "chair_final/c7_a.JPG"), (6, 1, "bicycle_final/b6_b.JPG"),
                 (7, 2, "chair_final/c7_b.JPG"), (7, 2, "chair_final/c7_c.JPG")]
    (base / "Info_Files").mkdir(parents=True)
    for fname, rows in (("Ebay_train.txt", train_rows), ("Ebay_test.txt", test_rows)):
        lines = ["image_id class_id super_class_id path"] + [f"{i + 1} {c} {s} {p}" for i, (c, s, p) in enumerate(rows)]
        (base / "Info_Files" / fname).write_text("\n".join(lines) + "\n")
        for _, _, p in rows:
            _png(base / "images" / p)
    return tmp_path


def test_sop_splits_exact(tmp_path):
    root = _sop_root(tmp_path)
    train = urd.create_dataset("repr/sop", root, "train")
    # super-class order chair (2), bicycle (1); first int(n/2) sorted classes: chair [4], bicycle [1]
    assert _names(train) == ["c4_a.JPG", "b1_a.JPG", "b1_b.JPG"] and train.labels.tolist() == [0, 1, 1]
    val = urd.create_dataset("repr/sop", root, "validation")
    assert _names(val) == ["c5_a.JPG", "c5_b.JPG", "b2_a.JPG", "b3_a.JPG"] and val.labels.tolist() == [0, 0, 1, 2]
    test = urd.create_dataset("repr/sop", root, "test")
    assert test.labels.tolist() == [5, 6, 5, 6, 6] and test.num_classes == 7
    tot = urd.create_dataset("repr/sop", root, "trainontest")
    assert _names(tot) == ["b6_a.JPG", "c7_a.JPG", "c7_c.JPG"] and tot.labels.tolist() == [0, 1, 1]
    assert _names(urd.create_dataset("repr/sop", root, "testontest")) == ["b6_b.JPG", "c7_b.JPG"]


def _soft_root(tmp_path: Path) -> Path:
    name = "Treeversity#1"
    images = {k: f"{name}/fold{k}/img_{k}.png" for k in range(1, 6)}
    images["1b"] = f"{name}/fold1/img_0.png"
    for p in images.values():
        _png(tmp_path / p)
    annotators = [
        {"annotations": [{"image_path": images[1], "class_label": "b"}, {"image_path": images["1b"], "class_label": "a"},
                         {"image_path": images[2], "class_label": "c"}, {"image_path": images[3], "class_label": "a"},
                         {"image_path": images[4], "class_label": None}, {"image_path": images[5], "class_label": "b"}]},
        {"annotations": [{"image_path": images[1], "class_label": "a"}, {"image_path": images["1b"], "class_label": "a"},
                         {"image_path": images[4], "class_label": "c"}, {"image_path": images[5], "class_label": "b"}]},
    ]
    (tmp_path / name / "annotations.json").write_text(json.dumps(annotators))
    return tmp_path


def test_soft_folds_votes_exact(tmp_path):
    root = _soft_root(tmp_path)
    val = urd.create_dataset("soft/treeversity1", root, "validation")
    # sorted paths: fold1/img_0.png, fold1/img_1.png; classes a, b, c; tie a/b -> a (first)
    assert _names(val) == ["img_0.png", "img_1.png"]
    assert val.soft_labels.tolist() == [[2, 0, 0], [1, 1, 0]] and val.labels.tolist() == [0, 0]
    assert val.classes == ["a", "b", "c"] and val.num_classes == 3 and val.name == "soft/treeversity1"
    test = urd.create_dataset("soft/treeversity1", root, "test")
    assert test.soft_labels.tolist() == [[0, 0, 1]] and test.labels.tolist() == [2]
    train = urd.create_dataset("soft/Treeversity#1", root, "train")
    assert _names(train) == ["img_3.png", "img_4.png", "img_5.png"]
    assert train.soft_labels.tolist() == [[1, 0, 0], [0, 0, 1], [0, 2, 0]] and train.labels.tolist() == [0, 2, 1]
    item = train[2]
    assert item["soft_labels"].dtype == torch.float32 and item["soft_labels"].tolist() == [0, 2, 0]
    assert len(urd.create_dataset("soft/treeversity1", root, "all")) == 6
    batch = torch.utils.data.default_collate([dict(train[i], image=torch.zeros(1)) for i in range(3)])
    assert batch["soft_labels"].shape == (3, 3) and batch["label"].tolist() == [0, 2, 1]


def test_folder_split_search_and_class_map(tmp_path):
    for split in ("train", "val"):
        for cls, n in (("n02", 2), ("n01", 1)):
            for k in range(n):
                _png(tmp_path / "mini" / split / cls / f"{k}.png")
    train = urd.create_dataset("folder/mini", tmp_path, "train")
    assert train.labels.tolist() == [0, 1, 1] and train.classes == ["n01", "n02"] and train.name == "folder/mini"
    val = urd.create_dataset("folder/mini", tmp_path, "validation")
    assert Path(val.describe(0)).parts[-3] == "val"
    class_map = tmp_path / "wnids.txt"
    class_map.write_text("n00\nn02\n\nn09\nn01\n")
    mapped = urd.create_dataset("folder/mini", tmp_path, "train", class_map=class_map)
    assert mapped.labels.tolist() == [3, 1, 1] and mapped.num_classes == 4
    class_map.write_text("n00\nn02\n")
    with pytest.raises(ValueError, match=r"1 class folder\(s\) in .*train are not in class_map .*'n01'"):
        urd.create_dataset("folder/mini", tmp_path, "train", class_map=class_map)
    class_map.write_text("n01\nn02\nn01\n")
    with pytest.raises(ValueError, match="lists 'n01' twice"):
        urd.create_dataset("folder/mini", tmp_path, "train", class_map=class_map)
    with pytest.raises(FileNotFoundError, match=r"no test folder under .*mini.*split='all'"):
        urd.create_dataset("folder/mini", tmp_path, "test")
    # taking that hint on this layout would label every image by its split folder (train = 0, val = 1)
    with pytest.raises(ValueError, match=r"split='all' would take the split folders train, val of .*mini as its classes"):
        urd.create_dataset("folder/mini", tmp_path, "all")
    _png(tmp_path / "flat" / "train" / "0.png")  # a class that happens to be called "train" among others is fine
    _png(tmp_path / "flat" / "zebra" / "0.png")
    assert urd.create_dataset("folder/flat", tmp_path, "all").classes == ["train", "zebra"]


def _resisc_root(tmp_path: Path) -> Path:
    for c, cls in enumerate(("airport", "beach", "church")):
        for k in range(5):
            _png(tmp_path / "NWPU-RESISC45" / cls / f"{cls}_{k:03d}.jpg", 10 * c + k)
    return tmp_path


def test_vtab_resisc45_folder_splits(tmp_path):
    root = _resisc_root(tmp_path)
    get = lambda split, seed=0: urd.create_dataset(  # noqa: E731
        "vtab/resisc45", root, split, seed=seed, train_size=8, val_size=2
    )
    parts = {s: get(s) for s in ("train", "validation", "test", "trainval")}
    sets = {s: set(d.positions.tolist()) for s, d in parts.items()}
    assert [len(sets[s]) for s in ("train", "validation", "test")] == [8, 2, 3]  # test = round(0.2 * 15)
    assert not (sets["train"] & sets["validation"]) and not (sets["test"] & (sets["train"] | sets["validation"]))
    assert sets["trainval"] == sets["train"] | sets["validation"]
    assert parts["test"].positions.tolist() == sorted(sets["test"])
    for d in parts.values():
        assert d.labels.tolist() == [int(p) // 5 for p in d.positions]  # class folders sorted, 5 images each
        folders = [Path(d.describe(i)).parent.name for i in range(len(d))]
        assert folders == [("airport", "beach", "church")[label] for label in d.labels.tolist()]
    assert get("train").positions.tolist() == parts["train"].positions.tolist()  # deterministic
    assert any(get(s, seed=1).positions.tolist() != parts[s].positions.tolist() for s in ("train", "test"))
    # the rule, recomputed from the keyed permutation
    order = np.argsort(urd._keyed_random.keyed_uniform(0, ("vtab/resisc45", "test"), np.arange(15)), kind="stable")
    assert sorted(order[12:].tolist()) == parts["test"].positions.tolist()
    with pytest.raises(ValueError, match=r"train_size \+ val_size = 13 must be in \[0, 12\]"):
        urd.create_dataset("vtab/resisc45", root, "train", train_size=12, val_size=1)


class _FakeTorchvision:
    """A torchvision-like dataset: ``labels`` attribute, items ``(PIL image, label)``."""

    def __init__(self, labels, shade):
        self.labels, self.shade = np.asarray(labels), shade

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return Image.new("L", (3, 3), self.shade + i), int(self.labels[i])


def test_vtab_official_test_and_two_part_pool(monkeypatch):
    def opener(labels, shade):
        def open_part(root):
            fake = _FakeTorchvision(labels, shade)
            return urd.TorchvisionImages(fake), vtab.dataset_labels(fake)

        return open_part

    task = vtab.VtabTask(10, (opener([1] * 20, 0), opener([2] * 10, 100)), opener([3, 4, 5], 200))
    monkeypatch.setitem(vtab.TASKS, "dtd", task)
    root = Path(".")
    test = urd.create_dataset("vtab/dtd", root, "test")
    assert test.labels.tolist() == [3, 4, 5] and test[1]["image"].getpixel((0, 0)) == (201, 201, 201)
    train = urd.create_dataset("vtab/dtd", root, "train", train_size=24, val_size=6)
    val = urd.create_dataset("vtab/dtd", root, "val", train_size=24, val_size=6)
    assert sorted(train.positions.tolist() + val.positions.tolist()) == list(range(30))
    assert train.labels.tolist() == [1 if p < 20 else 2 for p in train.positions]
    k = int(np.argmax(val.positions >= 20)) if (val.positions >= 20).any() else None
    if k is not None:  # the second pool part is read from its own source
        assert val[k]["image"].getpixel((0, 0))[0] == 100 + int(val.positions[k]) - 20
    with pytest.raises(ValueError, match="has an official test split"):
        vtab.vtab_split_positions("dtd", "test", 30, has_test=True)


# ---- bad input ---------------------------------------------------------------------------------


def test_unknown_name_split_root(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'repr/nope'; available: idx/fashion_mnist, repr/cars, repr/cub"):
        urd.create_dataset("repr/nope", tmp_path, "test")
    with pytest.raises(ValueError, match=r"split for repr/cub must be one of \['train', 'validation', 'test', "
                       r"'trainontest', 'testontest'\], got 'dev'"):
        urd.create_dataset("repr/cub", tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="dataset root folder not found: .*missing"):
        urd.create_dataset("repr/cub", tmp_path / "missing", "test")
    with pytest.raises(FileNotFoundError, match=r"CUB-200-2011 images .* folder not found; looked for .*cub/images"):
        urd.create_dataset("repr/cub", tmp_path, "test")
    with pytest.raises(TypeError, match="name must be a str"):
        urd.create_dataset(3, tmp_path, "test")
    with pytest.raises(ValueError, match="on_error must be one of"):
        urd.create_dataset("soft/treeversity1", tmp_path, "all", on_error="ignore")


def test_empty_class_and_bad_cub_folder(tmp_path):
    _png(tmp_path / "cub" / "images" / "001.A" / "a.jpg")
    (tmp_path / "cub" / "images" / "002.B").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*002\.B contains no images"):
        urd.create_dataset("repr/cub", tmp_path, "train")
    _png(tmp_path / "cub" / "images" / "002.B" / "b.jpg")
    (tmp_path / "cub" / "images" / "Misc").mkdir()
    with pytest.raises(ValueError, match=r"CUB class folder .*Misc does not start with its number"):
        urd.create_dataset("repr/cub", tmp_path, "train")


def test_sop_missing_info_files(tmp_path):
    (tmp_path / "online_products" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"Info_Files folder not found: .*online_products/Info_Files"):
        urd.create_dataset("repr/sop", tmp_path, "test")
    (tmp_path / "online_products" / "Info_Files").mkdir()
    with pytest.raises(FileNotFoundError, match=r"index not found: .*Ebay_test\.txt"):
        urd.create_dataset("repr/sop", tmp_path, "test")
    (tmp_path / "online_products" / "Info_Files" / "Ebay_test.txt").write_text("id path\n")
    with pytest.raises(ValueError, match="expected the header 'image_id class_id super_class_id path'"):
        urd.create_dataset("repr/sop", tmp_path, "test")
    (tmp_path / "online_products" / "Info_Files" / "Ebay_test.txt").write_text(
        "image_id class_id super_class_id path\n1 11 1 a/1.JPG\n2 x12 1 a/2.JPG\n")
    with pytest.raises(ValueError, match=r"Ebay_test\.txt:3: expected 4 columns .* with integer ids, got '2 x12 1 a/2.JPG'"):
        urd.create_dataset("repr/sop", tmp_path, "test")
    (tmp_path / "online_products" / "images" / "a").mkdir()
    _png(tmp_path / "online_products" / "images" / "a" / "1.JPG")
    _png(tmp_path / "online_products" / "images" / "a" / "2.JPG")
    (tmp_path / "online_products" / "Info_Files" / "Ebay_test.txt").write_text(
        "image_id class_id super_class_id path\n1 11 1 a/1.JPG\n2 0 1 a/2.JPG\n")  # was: label -1, no file named
    with pytest.raises(ValueError, match=r"Ebay_test\.txt:3: class_id is 1-based \(as in the SOP download\), got 0$"):
        urd.create_dataset("repr/sop", tmp_path, "test")


def test_soft_missing_or_bad_annotations(tmp_path):
    (tmp_path / "Pig").mkdir()
    with pytest.raises(FileNotFoundError, match=r"annotations file not found: .*Pig/annotations\.json"):
        urd.create_dataset("soft/pig", tmp_path, "all")
    (tmp_path / "Pig" / "annotations.json").write_text('[{"labels": []}]')
    with pytest.raises(ValueError, match=r"annotations\.json: expected a list of annotators with 'annotations'"):
        urd.create_dataset("soft/pig", tmp_path, "all")
    with pytest.raises(FileNotFoundError, match=r"soft-label dataset folder not found: .*Turkey"):
        urd.create_dataset("soft/turkey", tmp_path, "all")
    root = _soft_root(tmp_path)
    (root / "Treeversity#1" / "fold3" / "img_3.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 annotated image\(s\) not found, e\.g\. .*fold3/img_3\.png"):
        urd.create_dataset("soft/treeversity1", root, "train")


def test_undecodable_image_raise_or_skip(cub_root):
    bad = cub_root / "cub" / "images" / "003.Gamma" / "Gamma_1.jpg"
    bad.write_bytes(b"not an image")
    test = urd.create_dataset("repr/cub", cub_root, "test")
    with pytest.raises(urd.ImageDecodeError, match=r"cannot decode image .*Gamma_1\.jpg"):
        test[1]
    skipping = urd.create_dataset("repr/cub", cub_root, "test", on_error="skip")
    with pytest.warns(RuntimeWarning, match=r"Gamma_1\.jpg.*skipped \(on_error='skip'\), trying item 2"):
        item = skipping[1]
    assert item["index"] == 2 and item["label"] == 2
    assert skipping[0]["index"] == 0
    bad.unlink()
    with pytest.raises(urd.ImageDecodeError, match=r"image not found: .*Gamma_1\.jpg"):
        test[1]
    with pytest.raises(IndexError, match="index 7 out of range for repr/cub"):
        test[7]


def test_subset_and_few_shot(cub_root):
    test = urd.create_dataset("repr/cub", cub_root, "test")
    sub = test.subset([6, 0])
    assert sub.labels.tolist() == [3, 2] and sub[0]["index"] == 0 and sub.describe(0) == test.describe(6)
    assert urd.few_shot_indices(test.labels, 2).tolist() == [0, 1, 3, 5]  # class 2: step 1 -> 0,1; class 3: step 2 -> 3,5


def test_list_datasets_shows_every_benchmark_dataset():
    # The original README's zero-shot list (url-spec §4.1/§4.3): soft/cifar is its CIFAR10H fold layout.
    paper = ["repr/cub", "repr/cars", "repr/sop", "soft/cifar", "soft/treeversity1", "vtab/caltech101",
             "vtab/cifar100", "vtab/dtd", "vtab/oxford_flowers102", "vtab/oxford_iiit_pet", "vtab/resisc45",
             "vtab/sun397", "vtab/svhn"]
    names = urd.list_datasets()
    assert set(paper) <= set(names) and {"soft/cifar10h", "folder/<name>", "soft/<name>"} <= set(names)
    assert len(names) == len(set(names))


class _TorchvisionItems:
    """A torchvision-like dataset whose items ``[0]`` are given objects (images, arrays, anything)."""

    root = "/data/fake"

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], 0


def test_torchvision_images_that_cannot_be_converted_are_named():
    ok = np.full((2, 3), 7, dtype=np.uint8)
    too_bright = Image.fromarray(np.full((2, 2), 2.0, dtype=np.float32))  # mode F holds [0, 1]
    source = urd.TorchvisionImages(_TorchvisionItems(
        [ok, too_bright, np.zeros((2, 2), np.complex64), np.zeros((2, 2, 2, 2), np.uint8), torch.zeros(3, 2, 2)]
    ))
    assert np.asarray(source.load(0)).tolist() == [[[7, 7, 7]] * 3] * 2  # gray array -> RGB, as before
    for position, reason in [(1, r"a mode F image must hold values in \[0\.0, 1\.0\], got \[2, 2\]"),
                             (2, r"PIL cannot make an image of an array of shape \(2, 2\), dtype complex64"),
                             (3, r"PIL cannot make an image of an array of shape \(2, 2, 2, 2\), dtype uint8")]:
        with pytest.raises(urd.ImageDecodeError) as err:
            source.load(position)
        assert type(err.value) is urd.ImageDecodeError  # a ValueError: on_error='skip' skips it
        assert re.match(rf"cannot decode image _TorchvisionItems\(/data/fake\)\[{position}\]: {reason}", str(err.value))
    with pytest.raises(TypeError) as err:  # a dataset built with a transform: not a bad image, not skipped
        source.load(4)
    assert type(err.value) is TypeError
    assert str(err.value).startswith("image _TorchvisionItems(/data/fake)[4] is a Tensor; the dataset must give "
                                     "PIL images or numpy arrays (build it with transform=None)")


def test_subset_refuses_masks_and_fractional_indices(cub_root):
    # A boolean mask used to become positions 0/1 (np.asarray(mask, int64)): N items, all copies of 0 and 1.
    test = urd.create_dataset("repr/cub", cub_root, "test")
    mask = test.labels == 3
    with pytest.raises(TypeError, match=r"indices must be integer positions, got a bool array \(a mask: .*nonzero"):
        test.subset(mask)
    with pytest.raises(TypeError, match=r"indices must be integer positions, got a bool array"):
        test.subset(mask.numpy().tolist())
    with pytest.raises(TypeError, match=r"indices must be integer positions, got a float64 array"):
        test.subset([0.9, 1.7])
    by_mask = test.subset(torch.nonzero(mask).flatten())
    assert by_mask.labels.tolist() == [3] * int(mask.sum()) and len(by_mask) == int(mask.sum())
    assert len(test.subset([])) == 0


def _index_root(tmp_path: Path, folder_name: str, header: str, rows: list) -> Path:
    """``tmp_path/<folder_name>/index.csv`` with ``rows`` and one 6x4 PNG per row's first column."""
    folder = tmp_path / folder_name
    folder.mkdir(parents=True)
    for k, row in enumerate(rows):
        _png(folder / row.split(",")[0], k)
    (folder / "index.csv").write_text("\n".join([header, *rows]) + "\n")
    return tmp_path


def test_index_readers_refuse_an_empty_split(tmp_path):
    # Tiny ImageNet's split column holds "val"/"train"; an index without val rows used to give 0 items silently.
    root = _index_root(tmp_path, "tiny_imagenet200", "path,split,class_index,wnid",
                       ["a.png,train,3,n0", "b.png,train,5,n1"])
    assert urd.create_dataset("tar/tiny_imagenet200", root, "train").labels.tolist() == [3, 5]
    with pytest.raises(ValueError, match=r"index\.csv: no rows of split 'validation' \(split column = 'val'\)"):
        urd.create_dataset("tar/tiny_imagenet200", root, "validation")
    root = _index_root(tmp_path / "s", "imagenet_sample1000", "path,class_index,wnid", ["a.png,3,n0", "b.png,7,n1"])
    assert urd.create_dataset("tar/imagenet_sample1000", root, "train").labels.tolist() == [3, 7]
    with pytest.raises(ValueError, match=r"index\.csv: no rows of split 'validation'"):
        urd.create_dataset("tar/imagenet_sample1000", root, "validation")


@pytest.mark.parametrize("name, header, row", [
    ("tiny_imagenet200", "path,split,class_index,wnid", "b.png,train,{},n1"),
    ("imagenet_sample1000", "path,class_index,wnid", "b.png,{},n1"),
    ("imagenet_val1300", "path,class_index,real_labels,real_soft_entropy", "b.png,{},7,"),
])
@pytest.mark.parametrize("class_index", ["-1", "1000"])
def test_a_class_index_outside_imagenet_is_refused_naming_the_file_and_row(tmp_path, name, header, row, class_index):
    # was: "labels must lie in [0, 1000), got [-1, 3]", naming neither the file nor the row
    first = row.replace("b.png", "a.png").format(3)
    root = _index_root(tmp_path, name, header, [first, row.format(class_index)])
    dataset = {"tiny_imagenet200": "tar/tiny_imagenet200", "imagenet_sample1000": "tar/imagenet_sample1000",
               "imagenet_val1300": "soft/imagenet_val1300"}[name]
    with pytest.raises(ValueError, match=rf"{name}/index\.csv row 3: class_index must be a class index in \[0, 1000\), "
                                         rf"got {class_index}$"):
        urd.create_dataset(dataset, root, "train" if name != "imagenet_val1300" else "test")


@pytest.mark.parametrize("label", ["-1", "10"])
def test_cifar10h_label_outside_cifar10_is_refused_naming_the_file_and_row(tmp_path, label):
    # was: "labels must lie in [0, 10), got [3, 10]", naming neither the file nor the row
    folder = tmp_path / "cifar10_test_jpg"
    folder.mkdir()
    _png(folder / "a.png", 0)
    _png(folder / "b.png", 1)
    (folder / "index.csv").write_text(f"cifar10_test_idx,label,path_in_tar\n0,3,a.png\n1,{label},b.png\n")
    np.save(tmp_path / "cifar10h-counts.npy", np.ones((2, 10)))
    with pytest.raises(ValueError, match=rf"cifar10_test_jpg/index\.csv row 3: label must be a CIFAR-10 class index "
                                         rf"in \[0, 10\), got {label}$"):
        urd.create_dataset("soft/cifar10h", tmp_path, "test")


@pytest.mark.parametrize("real", ["-1", "1000", "n01440764"])
def test_imagenet_val1300_refuses_bad_real_labels(tmp_path, real):
    # "-1" used to set the vote of class 999 (numpy's negative index) without an error.
    header = "path,class_index,real_labels,real_soft_entropy"
    root = _index_root(tmp_path, "imagenet_val1300", header, ["a.png,3,3 4,0.5", f"b.png,7,{real},"])
    with pytest.raises(ValueError, match=rf"index\.csv row 3: real_labels must be class indices in \[0, 1000\), got '{real}'"):
        urd.create_dataset("soft/imagenet_val1300", root, "validation")


@pytest.mark.parametrize("entropy", ["x", "-0.1", "nan", "inf"])
def test_imagenet_val1300_refuses_a_bad_soft_entropy(tmp_path, entropy):
    header = "path,class_index,real_labels,real_soft_entropy"
    root = _index_root(tmp_path, "imagenet_val1300", header, ["a.png,3,3 4,0.5", f"b.png,7,7,{entropy}"])
    with pytest.raises(ValueError, match=rf"index\.csv row 3: real_soft_entropy must be a finite number >= 0 or blank, got '{entropy}'"):
        urd.create_dataset("soft/imagenet_val1300", root, "validation")


def test_imagenet_val1300_votes_and_class_index_checked(tmp_path):
    header = "path,class_index,real_labels,real_soft_entropy"
    root = _index_root(tmp_path, "imagenet_val1300", header, ["a.png,3,3 4,0.5", "b.png,7,,"])
    ds = urd.create_dataset("soft/imagenet_val1300", root, "test")
    assert ds.labels.tolist() == [3, 7] and ds.soft_labels.shape == (2, 1000)
    assert torch.nonzero(ds.soft_labels).tolist() == [[0, 3], [0, 4]] and float(ds.soft_labels.sum()) == 2
    assert ds.metadata["real_soft_entropy"][0] == 0.5 and torch.isnan(ds.metadata["real_soft_entropy"][1])
    (tmp_path / "imagenet_val1300" / "index.csv").write_text(f"{header}\na.png,x3,3,0.5\n")
    with pytest.raises(ValueError, match=r"index\.csv row 2: class_index must be an integer, got 'x3'"):
        urd.create_dataset("soft/imagenet_val1300", root, "test")
