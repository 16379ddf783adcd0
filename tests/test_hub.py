"""Checkpoint folders: save/load round trips, timm compatibility, strictness, the offline Hub cache, push."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import timm
import timm.data
import torch
from torch import nn

import uncertain_repr as ur
from uncertain_repr import hub, pretrained

BACKBONES = ("test_vit", "test_resnet")
PVU = {
    "vit_tiny_patch16_224.pvu": ("vit_tiny_patch16_224.augreg_in21k", 192),
    "vit_small_patch16_224.pvu": ("vit_small_patch16_224.augreg_in21k", 384),
    "vit_base_patch16_224.pvu": ("vit_base_patch16_224.augreg_in21k", 768),
    "vit_large_patch16_224.pvu": ("vit_large_patch16_224.augreg_in21k", 1024),
}


def images(model, batch=3, seed=1):
    return torch.randn(batch, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(seed))


def outputs(model, x):
    torch.manual_seed(123)  # methods that sample (MC dropout, ...) draw the same noise in both models
    with torch.no_grad():
        out = model(x)
    return out.embedding, out.uncertainty, out.logits


def assert_same_model(a, b, x):
    assert a.config == b.config
    for got, want in zip(outputs(a, x), outputs(b, x)):
        assert (got is None) == (want is None)
        if got is not None:
            assert torch.equal(got, want)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pred-net model on test_vit with a non-default scale buffer, and its checkpoint folder."""
    model = ur.Uncertainizer("test_vit", "pred-net", width=16, depth=2).eval()
    model.method.set_mean_uncertainty(torch.randn(8, model.embed_dim), 3.0)
    folder = model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "model")
    return model, folder


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", ur.list_methods())
def test_round_trip_every_registered_method(tmp_path, backbone, method):
    try:
        model = ur.Uncertainizer(backbone, method).eval()
    except (TypeError, ValueError) as err:
        pytest.skip(f"{method} needs arguments beyond the defaults on {backbone}: {err}")
    folder = model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == sorted(hub.CHECKPOINT_FILES)
    loaded = ur.load_model(folder)
    assert not loaded.training
    assert_same_model(model, loaded, images(model))


def test_round_trip_keeps_buffers_and_method_args(saved):
    model, folder = saved
    loaded = ur.load_model(folder)
    assert float(loaded.method.scale) == pytest.approx(float(model.method.scale)) and float(model.method.scale) != 1.0
    assert loaded.method_args == {"width": 16, "depth": 2}
    assert_same_model(model, loaded, images(model))


def test_round_trip_backbone_args_and_timm_module(tmp_path):
    model = ur.Uncertainizer("test_convnext", "pred-net", backbone_args={"head_hidden_size": 48}, width=8, depth=1)
    loaded = ur.load_model(model.save_pretrained(tmp_path / "a"))
    assert loaded.embed_dim == 48 and loaded.backbone_args == {"head_hidden_size": 48}
    assert_same_model(model.eval(), loaded, images(model))
    # a timm module passed as an object (no name) saves too: timm's config records architecture + args
    module = ur.Uncertainizer(timm.create_model("test_resnet", num_classes=7), "class-entropy").eval()
    loaded = ur.load_model(module.save_pretrained(tmp_path / "b"))
    assert loaded.num_classes == 7
    assert_same_model(module, loaded, images(module))



def test_round_trip_keeps_a_pretrained_cfg_given_to_uncertainizer(tmp_path):
    """pretrained_cfg= replaces the timm backbone's preprocessing: the checkpoint must load with it, not timm's."""
    cfg = {"input_size": (3, 48, 48), "mean": (0.1, 0.2, 0.3), "std": (0.3, 0.2, 0.1), "crop_pct": 1.0,
           "interpolation": "bilinear"}
    model = ur.Uncertainizer("test_vit", "pred-net", pretrained=False, pretrained_cfg=cfg, width=8, depth=1).eval()
    folder = model.save_pretrained(tmp_path / "ckpt")
    loaded = ur.load_model(folder)
    got = {k: tuple(v) if isinstance(v, list) else v for k, v in timm.data.resolve_model_data_config(loaded).items()}
    assert got == {**cfg, "crop_mode": "center"} == timm.data.resolve_model_data_config(model)
    assert "| mean | `[0.1, 0.2, 0.3]` |" in (folder / "README.md").read_text()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_round_trip_keeps_the_dtype_and_the_numbers(tmp_path, dtype):
    """A float64 (or bfloat16) model must not come back as float32 with other outputs."""
    model = ur.Uncertainizer("test_vit", "pred-net", pretrained=False, width=8, depth=1).to(dtype).eval()
    loaded = ur.load_model(model.save_pretrained(tmp_path / "ckpt"))
    assert {t.dtype for t in loaded.parameters()} == {dtype}
    assert_same_model(model, loaded, images(model).to(dtype))


def test_a_head_file_mixing_dtypes_the_model_does_not_have_is_refused(tmp_path):
    model = ur.Uncertainizer("test_vit", "pred-net", pretrained=False, width=8, depth=1).eval()
    model.method.net[0].double()
    folder = model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"uncertainty_head.safetensors mixes floating dtypes the rebuilt model does "
                                         r"not have: net.0.bias \(file torch.float64, model torch.float32\)"):
        ur.load_model(folder)

def test_config_is_timm_compatible_and_timm_loads_the_backbone(saved):
    model, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_vit"
    assert config["num_classes"] == 1000 and config["num_features"] == model.backbone.num_features
    assert config["pretrained_cfg"]["mean"] == list(model.pretrained_cfg["mean"])
    block = config["uncertain_repr"]
    assert block["format_version"] == hub.FORMAT_VERSION and block["library_version"] == ur.__version__
    assert {k: block[k] for k in model.config} == model.config
    head_keys = safetensors.torch.load_file(folder / "uncertainty_head.safetensors").keys()
    assert set(head_keys) == set(model.method.state_dict())
    # timm alone, from the folder: same backbone, same logits
    backbone = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = images(model)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), model(x).logits, rtol=0, atol=0)


def test_model_card(saved):
    model, folder = saved
    card = (folder / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert 'license: "apache-2.0"' in front and "library_name: uncertain-repr" in front
    assert '- "pred-net"' in front and '- "timm"' in front
    assert f"ur.load_model({str(folder)!r})" in body and "`test_vit.r160_in1k`" in body
    assert "| Uncertainty method | `pred-net` (width=16, depth=2) |" in body


def test_model_card_metrics_and_training(tmp_path):
    model = ur.Uncertainizer("test_vit", "embed-norm")
    card = hub.ModelCard(title="Demo", metrics={"r_auroc": 0.71234}, training={"epoch": 3, "seed": None},
                         license_note="Be nice.", load_name="demo.registered")
    folder = model.save_pretrained(tmp_path / "m", card=card)
    text = (folder / "README.md").read_text()
    assert "# Demo" in text and "| r_auroc | 0.7123 |" in text and "| epoch | `3` |" in text and "Be nice." in text
    assert "seed" not in text  # no row for an unknown value
    assert "ur.load_model('demo.registered')" in text and str(folder) not in text
    assert json.loads((folder / "config.json").read_text())["uncertain_repr"]["training"] == {"epoch": 3, "seed": None}


# ------------------------------------------------------------------------------ strictness and corruption
def rewrite(path: Path, edit) -> None:
    """Edit a weight file and record its new sha256 in config.json (as a deliberate re-save would)."""
    tensors = safetensors.torch.load_file(path)
    edit(tensors)
    safetensors.torch.save_file(tensors, path)
    config = json.loads((path.parent / "config.json").read_text())
    config["uncertain_repr"]["weights_sha256"][path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / "config.json").write_text(json.dumps(config))


def copy_folder(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_missing_and_unexpected_backbone_keys_are_listed(saved, tmp_path):
    folder = copy_folder(saved[1], tmp_path)

    def edit(t):
        del t["blocks.0.attn.qkv.weight"]
        t["surprise.weight"] = torch.zeros(2)

    rewrite(folder / "model.safetensors", edit)
    with pytest.raises(ValueError) as err:
        ur.load_model(folder)
    message = str(err.value)
    assert str(folder / "model.safetensors") in message
    assert "missing keys: blocks.0.attn.qkv.weight" in message and "unexpected keys: surprise.weight" in message


def test_head_shape_mismatch_and_unexpected_key_are_listed(saved, tmp_path):
    folder = copy_folder(saved[1], tmp_path)

    def edit(t):
        t["net.0.bias"] = torch.zeros(3)
        t["extra"] = torch.zeros(1)

    rewrite(folder / "uncertainty_head.safetensors", edit)
    expected = r"unexpected keys: extra; shape mismatches: net\.0\.bias \(file \(3,\), model \(16,\)\)"
    with pytest.raises(ValueError, match=expected):
        ur.load_model(folder)


@pytest.mark.parametrize("name", ["model.safetensors", "uncertainty_head.safetensors"])
def test_truncated_safetensors_names_the_file(saved, tmp_path, name):
    folder = copy_folder(saved[1], tmp_path)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    expected = rf"{folder / name} is not a readable safetensors file \(truncated or corrupt\?\)"
    with pytest.raises(ValueError, match=expected):
        ur.load_model(folder)


def test_incomplete_or_foreign_folders(saved, tmp_path):
    folder = copy_folder(saved[1], tmp_path)
    (folder / "uncertainty_head.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="uncertainty_head.safetensors not found"):
        ur.load_model(folder)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"architecture": "test_vit", "pretrained_cfg": {}}))
    with pytest.raises(ValueError, match="no 'uncertain_repr' block: it is a plain timm checkpoint"):
        ur.load_model(plain)
    config = json.loads((saved[1] / "config.json").read_text())
    config["uncertain_repr"]["format_version"] = hub.FORMAT_VERSION + 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="newer than this uncertain_repr"):
        ur.load_model(folder)


def test_unsaveable_models_are_refused_before_writing(tmp_path):
    custom = ur.Uncertainizer(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), "embed-norm", embed_dim=4)
    with pytest.raises(ValueError, match="only timm backbones can be saved"):
        custom.save_pretrained(tmp_path / "a")
    unregistered = type("Unregistered", (ur.methods.get_method_class("embed-norm"),), {})
    model = ur.Uncertainizer("test_vit", unregistered(64, 1000))
    with pytest.raises(ValueError, match="not registered"):
        model.save_pretrained(tmp_path / "b")
    odd = ur.Uncertainizer("test_vit", "constant", value=1.0)
    odd.method_args["value"] = object()
    with pytest.raises(ValueError, match=r"method_args\['value'\] = .* is not JSON-serialisable"):
        odd.save_pretrained(tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_a_method_that_method_args_would_not_rebuild_is_refused_before_writing(tmp_path):
    """A hyperparameter changed after building (SNGP's mean-field factor, tuned after training) or a method
    instance built with its own arguments: the checkpoint would load with method_args' values instead."""
    model = ur.Uncertainizer("test_vit", "sngp", pretrained=False).eval()
    model.method.gp_mean_field_factor = 5.0
    with pytest.raises(ValueError, match=r"model.method_args \{\} do not rebuild model.method \(model.method."
                                         r"gp_mean_field_factor is 5.0, rebuilt 1.0\)"):
        model.save_pretrained(tmp_path / "a")
    instance = ur.methods.create_method("pred-net", embed_dim=64, num_classes=1000, width=16, depth=1)
    with pytest.raises(ValueError, match=r"net.0.weight \(16, 64\), rebuilt \(512, 64\).*"
                                         r"ur.Uncertainizer\(backbone, 'pred-net', \*\*args\)"):
        ur.Uncertainizer("test_vit", instance, pretrained=False).save_pretrained(tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # recorded in method_args, the change saves and loads back with the same numbers; saving leaves the RNG alone
    model.method_args["gp_mean_field_factor"] = 5.0
    rng = torch.random.get_rng_state()
    folder = model.save_pretrained(tmp_path / "a")
    assert torch.equal(torch.random.get_rng_state(), rng)
    loaded = ur.load_model(folder)
    assert loaded.method.gp_mean_field_factor == 5.0
    assert_same_model(model, loaded, images(model))


# ------------------------------------------------------------------------------ atomic writes
def test_writes_are_atomic(saved, tmp_path, monkeypatch):
    model = saved[0]
    target = model.save_pretrained(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        ur.Uncertainizer("test_vit", "embed-norm").save_pretrained(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # old checkpoint intact
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left behind
    monkeypatch.undo()
    # replacing an existing checkpoint folder works; a folder with other files is never replaced
    ur.Uncertainizer("test_vit", "embed-norm").save_pretrained(target)
    assert ur.load_model(target).method_name == "embed-norm"
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files that are not part of a checkpoint \(notes.txt\)"):
        model.save_pretrained(target)
    assert (target / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------ names, registry, preprocessing
def test_pvu_registry_entries():
    assert set(PVU) <= set(ur.list_pretrained())
    for name, (arch, dim) in PVU.items():
        entry = pretrained.get_pretrained(name)
        assert (entry.architecture, entry.embed_dim, entry.num_classes) == (arch, dim, 21843)
        assert timm.models.get_pretrained_cfg(arch).num_classes == 21843
        assert entry.hf_hub_id is None and entry.package_files is None and not entry.downloadable
        assert entry.paper == "arXiv:2402.16569" and entry.preprocessing == "legacy"
        assert entry.license == "apache-2.0" and "ImageNet-21k" in entry.license_note


@pytest.mark.parametrize("name", sorted(PVU))
def test_pvu_names_explain_how_to_convert(name):
    with pytest.raises(FileNotFoundError) as err:
        ur.load_model(name)
    message = str(err.value)
    assert "https://drive.google.com/drive/folders/1W3u0xS_kOvirv1EgRpg-Ug4UIwnHPV6Z" in message
    assert f"uncertain-repr convert path/to/original.pth.tar pvu/{name} --arch {name}" in message
    assert f"load_model('pvu/{name}')" in message and "no Hugging Face Hub repository" in message


def test_package_files_entry(saved, monkeypatch):
    package_dir = Path(hub.__file__).parent
    entry = pretrained.PretrainedEntry(
        name="demo.pkg", architecture="test_vit", num_classes=1000, embed_dim=64,
        package_files=os.path.relpath(saved[1], package_dir),
    )
    monkeypatch.setitem(pretrained._PRETRAINED, entry.name, entry)
    assert_same_model(saved[0], ur.load_model("demo.pkg"), images(saved[0]))



def test_a_folder_named_like_a_registered_model_is_not_loaded_silently(saved, tmp_path, monkeypatch):
    """The registered name wins (timm's rule) with a warning naming the folder; './name' loads the folder."""
    package_dir = Path(hub.__file__).parent
    entry = pretrained.PretrainedEntry(
        name="demo.pkg", architecture="test_vit", num_classes=1000, embed_dim=64,
        package_files=os.path.relpath(saved[1], package_dir),
    )
    monkeypatch.setitem(pretrained._PRETRAINED, entry.name, entry)
    own = ur.Uncertainizer("test_vit", "embed-norm").eval()
    own.save_pretrained(tmp_path / "demo.pkg")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"'demo.pkg' is a registered model and also a folder in .*'./demo.pkg'"):
        registered = ur.load_model("demo.pkg")
    assert_same_model(saved[0], registered, images(saved[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("./demo.pkg", "local-dir:demo.pkg", tmp_path / "demo.pkg"):
            assert_same_model(own, ur.load_model(name), images(own))


def test_head_from_entry_loads_another_entrys_head_checked_by_its_own_config(saved, tmp_path, monkeypatch):
    """One head file, two configs (another method_args value): the second folder ships config + card only."""
    package_dir = Path(hub.__file__).parent
    model = saved[0]
    other = ur.Uncertainizer("test_vit", "pred-net", pretrained=False, **model.method_args, negative_slope=0.2).eval()
    other.load_state_dict(model.state_dict())
    folder = other.save_pretrained(tmp_path / "other")
    head = "uncertainty_head.safetensors"
    assert (folder / head).read_bytes() == (saved[1] / head).read_bytes()
    (folder / "uncertainty_head.safetensors").unlink()
    (folder / "model.safetensors").unlink()
    shutil.copy(saved[1] / "model.safetensors", tmp_path / "model.safetensors")
    for name, files, head_from in (("demo.base", saved[1], None), ("demo.other", tmp_path / "other", "demo.base")):
        entry = pretrained.PretrainedEntry(name=name, architecture="test_vit", num_classes=1000, embed_dim=64,
                                           package_files=os.path.relpath(files, package_dir), head_from=head_from)
        monkeypatch.setitem(pretrained._PRETRAINED, name, entry)
    with pytest.raises(FileNotFoundError, match="other/model.safetensors not found"):
        ur.load_model("demo.other")  # only the head is shared: the backbone file is the folder's own
    shutil.copy(saved[1] / "model.safetensors", folder / "model.safetensors")
    loaded = ur.load_model("demo.other")
    assert loaded.method_args["negative_slope"] == 0.2 and loaded.method.net[1].negative_slope == 0.2
    assert not torch.equal(outputs(loaded, images(model))[1], outputs(model, images(model))[1])
    assert_same_model(other, loaded, images(model))
    # the head file must be the one this config recorded, and only one may ship
    shutil.copy(saved[1] / "uncertainty_head.safetensors", folder / "uncertainty_head.safetensors")
    with pytest.raises(ValueError, match="holds its own uncertainty_head.safetensors, but its registry entry takes the "
                                         "head from"):
        ur.load_model("demo.other")
    (folder / "uncertainty_head.safetensors").unlink()
    config = json.loads((folder / "config.json").read_text())
    config["uncertain_repr"]["weights_sha256"]["uncertainty_head.safetensors"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model/uncertainty_head.safetensors has sha256 .*, but config.json records 0"):
        ur.load_model("demo.other")
    with pytest.raises(ValueError, match="head_from needs package_files"):
        pretrained.PretrainedEntry(name="x", architecture="test_vit", num_classes=1, embed_dim=1, head_from="demo.base")

def test_bad_names(saved):
    with pytest.raises(ValueError, match="did you mean vit_base_patch16_224.pvu"):
        ur.load_model("vit_bse_patch16_224.pvu")
    with pytest.raises(FileNotFoundError, match="for a Hub repo write 'hf-hub:org/missing'"):
        ur.load_model("org/missing")
    for missing in (saved[1].parent / "nope" / "x", "./nope", "local-dir:org/x"):
        with pytest.raises(FileNotFoundError) as err:  # a path, not a Hub repo: no 'hf-hub:/...' suggestion
            ur.load_model(missing)
        folder = Path(os.fspath(missing).removeprefix("local-dir:")).absolute()
        assert type(err.value) is FileNotFoundError and str(err.value) == (
            f"name_or_path {os.fspath(missing)!r}: checkpoint folder {folder} not found; for a Hub repo write "
            "'hf-hub:org/name', for a registered name see ur.list_pretrained()"
        )
    with pytest.raises(ValueError, match="revision= applies to Hub checkpoints only"):
        ur.load_model(saved[1], revision="main")
    with pytest.raises(ValueError, match="two revisions given"):
        ur.load_model("hf-hub:org/repo@v1", revision="v2")
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        ur.load_model(saved[1], preprocessing="imagenet")
    with pytest.raises(ValueError, match="is a file"):
        ur.load_model(saved[1] / "config.json")
    assert_same_model(saved[0], ur.load_model(f"local-dir:{saved[1]}"), images(saved[0]))


def test_legacy_preprocessing(saved):
    default = timm.data.resolve_model_data_config(ur.load_model(saved[1]))
    assert tuple(default["mean"]) == (0.5, 0.5, 0.5) and default["crop_pct"] == 0.95
    assert default["input_size"] == (3, 160, 160)
    legacy = ur.load_model(saved[1], preprocessing="legacy")
    config = timm.data.resolve_model_data_config(legacy)
    assert config == {
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 0.875,
        "crop_mode": "center",
    }
    assert pretrained.legacy_data_config(legacy) == config
    # a fixed-size backbone of another size keeps its size (the original runs passed --img-size)
    fixed = {"input_size": (3, 256, 256), "fixed_input_size": True}
    assert pretrained.legacy_data_config(type("M", (), {"pretrained_cfg": fixed})())["input_size"] == (3, 256, 256)


# ------------------------------------------------------------------------------ Hugging Face Hub (offline cache)
def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def cache_snapshot(cache_dir: Path, repo_id: str, commit: str, folder: Path, refs=()) -> None:
    """Lay ``folder`` out as huggingface_hub's cache does: blobs by etag, snapshot symlinks, refs."""
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in folder.iterdir():
        data = file.read_bytes()
        etag = hashlib.sha256(data).hexdigest() if file.suffix == ".safetensors" else git_blob_sha1(data)
        (repo / "blobs" / etag).write_bytes(data)
        (repo / "snapshots" / commit / file.name).symlink_to(Path("..", "..", "blobs", etag))
    for ref in refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


def test_offline_hub_cache_and_revisions(tmp_path, monkeypatch):
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # set by conftest: no network anywhere
    main_model = ur.Uncertainizer("test_vit", "pred-net", width=8, depth=1).eval()
    v1_model = ur.Uncertainizer("test_vit", "max-prob").eval()
    cache = tmp_path / "hub"
    main_commit, v1_commit = "a" * 40, "b" * 40
    cache_snapshot(cache, "org/repo", main_commit, main_model.save_pretrained(tmp_path / "main"), refs=("main",))
    cache_snapshot(cache, "org/repo", v1_commit, v1_model.save_pretrained(tmp_path / "v1"), refs=("v1",))
    x = images(main_model)

    assert_same_model(main_model, ur.load_model("hf-hub:org/repo", cache_dir=cache), x)
    assert_same_model(v1_model, ur.load_model("hf-hub:org/repo@v1", cache_dir=cache), x)
    assert_same_model(v1_model, ur.load_model(f"hf-hub:org/repo@{v1_commit}", cache_dir=cache), x)
    assert_same_model(v1_model, ur.load_model("hf-hub:org/repo", revision="v1", cache_dir=cache), x)
    # the default cache location (HF_HUB_CACHE) is used when no cache_dir is given
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    loaded = ur.load_model("hf-hub:org/repo")
    assert_same_model(main_model, loaded, x)
    assert str(cache) in loaded.pretrained_cfg["file"]
    # timm alone loads the backbone from the same cache
    backbone = timm.create_model("hf-hub:org/repo@v1", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(backbone(x), v1_model(x).logits)
    # an uncached repo fails offline with huggingface_hub's own error
    with pytest.raises(huggingface_hub.errors.LocalEntryNotFoundError):
        ur.load_model("hf-hub:org/other")


def test_hub_registry_entry_resolves_through_the_cache(tmp_path, monkeypatch):
    model = ur.Uncertainizer("test_vit", "embed-norm").eval()
    cache_snapshot(tmp_path / "hub", "org/demo", "c" * 40, model.save_pretrained(tmp_path / "m"), refs=("main",))
    entry = pretrained.PretrainedEntry(
        name="demo.hub", architecture="test_vit", num_classes=1000, embed_dim=64, hf_hub_id="org/demo"
    )
    monkeypatch.setitem(pretrained._PRETRAINED, entry.name, entry)
    assert_same_model(model, ur.load_model("demo.hub", cache_dir=tmp_path / "hub"), images(model))


class FakeHfApi:
    """The slice of ``huggingface_hub.HfApi`` that push_to_hub uses; keeps a copy of the uploaded folder."""

    instances: list = []

    def __init__(self, token=None, library_name=None, library_version=None):
        self.init = {"token": token, "library_name": library_name, "library_version": library_version}
        self.calls = []
        FakeHfApi.instances.append(self)

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, commit_message, revision=None, create_pr=False):
        self.uploaded = Path(shutil.copytree(folder_path, self.destination))
        self.calls.append(("upload_folder", repo_id, commit_message, revision, create_pr))
        return "commit-info"


def test_push_to_hub_uploads_a_checkpoint_folder(saved, tmp_path, monkeypatch):
    FakeHfApi.instances.clear()
    FakeHfApi.destination = tmp_path / "uploaded"
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    model = saved[0]
    result = model.push_to_hub("me/demo", token="secret", private=True, revision="dev", commit_message="hello")
    assert result == "commit-info"
    (api,) = FakeHfApi.instances
    assert api.init == {"token": "secret", "library_name": "uncertain-repr", "library_version": ur.__version__}
    assert api.calls == [("create_repo", "me/demo", True, True), ("upload_folder", "me/demo", "hello", "dev", False)]
    assert sorted(p.name for p in api.uploaded.iterdir()) == sorted(hub.CHECKPOINT_FILES)
    assert "ur.load_model('hf-hub:me/demo')" in (api.uploaded / "README.md").read_text()
    assert_same_model(model, ur.load_model(api.uploaded), images(model))


def test_device_argument(saved):
    loaded = ur.load_model(saved[1], device="cpu")
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    assert copy.deepcopy(loaded).config == saved[0].config


def test_channels_last_model_saves_and_loads(tmp_path):
    model = ur.Uncertainizer("test_resnet", "pred-net", width=8, depth=1).eval().to(memory_format=torch.channels_last)
    folder = model.save_pretrained(tmp_path / "cl")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ur.load_model(folder)(x).uncertainty, model(x).uncertainty, rtol=1e-5, atol=1e-6)
