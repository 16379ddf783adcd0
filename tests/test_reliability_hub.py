"""Checkpoint folders: verified weights, no NaN, no reading outside the folder, umask-honouring files,
validated Hub names, and one-line CLI errors (docs/reliability.md)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

import uncertain_repr as ur
from uncertain_repr import hub
from uncertain_repr.cli import main

from ._train_helpers import tiny_model

SHIPPED = Path(hub.__file__).parent / "pretrained_models" / "efficientnet_lite0_pvu"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    tiny_model().save_pretrained(folder)
    return folder


@pytest.fixture
def folder(saved, tmp_path):
    return Path(shutil.copytree(saved, tmp_path / "copy"))


def edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------- 6. verified weights
def test_save_pretrained_records_the_sha256_of_each_weight_file_and_says_so_in_the_card(saved):
    block = json.loads((saved / "config.json").read_text())["uncertain_repr"]
    assert block["weights_sha256"] == {name: sha256(saved / name)
                                       for name in ("model.safetensors", "uncertainty_head.safetensors")}
    assert "SHA-256 of each weight file is recorded in `config.json`" in (saved / "README.md").read_text()


def test_shipped_checkpoint_records_its_head_checksum():
    block = json.loads((SHIPPED / "config.json").read_text())["uncertain_repr"]
    assert block["weights_sha256"] == {"uncertainty_head.safetensors": sha256(SHIPPED / "uncertainty_head.safetensors")}


@pytest.mark.parametrize("name", ["model.safetensors", "uncertainty_head.safetensors"])
def test_a_flipped_bit_is_detected_and_names_the_file(folder, name):
    data = bytearray((folder / name).read_bytes())
    data[-5] ^= 0x01  # inside the tensor bytes: the file still parses
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{folder / name} has sha256 [0-9a-f]{{64}}, but config.json records"):
        ur.load_model(folder)


def test_a_config_without_checksums_still_loads(folder):
    edit_config(folder, lambda c: c["uncertain_repr"].pop("weights_sha256"))
    ur.load_model(folder)


def test_nan_in_the_head_is_refused_on_load(folder, capsys):
    head = folder / "uncertainty_head.safetensors"
    tensors = safetensors.torch.load_file(head)
    key = sorted(tensors)[0]
    tensors[key][0] = float("nan")
    safetensors.torch.save_file(tensors, head)
    edit_config(folder, lambda c: c["uncertain_repr"]["weights_sha256"].update({head.name: sha256(head)}))
    with pytest.raises(ValueError, match=rf"{head} holds NaN or infinite values in {key}"):
        ur.load_model(folder)
    assert main(["predict", "--model", str(folder), str(folder / "missing.png")]) == 2
    assert "NaN" in capsys.readouterr().err


# ------------------------------------------------------------------------- 8. security
@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.safetensors", "sub/../../x.pt", ""])
def test_checkpoint_path_cannot_reach_outside_the_folder(folder, path):
    edit_config(folder, lambda c: c["uncertain_repr"].setdefault("backbone_args", {}).update(checkpoint_path=path))
    with pytest.raises(ValueError, match="is not a file inside the checkpoint folder"):
        ur.load_model(folder)


def test_checkpoint_path_inside_the_folder_is_read_from_the_folder(folder, monkeypatch, tmp_path):
    edit_config(folder, lambda c: c["uncertain_repr"]["backbone_args"].update(checkpoint_path="model.safetensors"))
    monkeypatch.chdir(tmp_path)  # relative to the folder, not to the working directory
    ur.load_model(folder)


@pytest.mark.parametrize("name, revision", [
    ("hf-hub:org/name@/abs/path", None), ("hf-hub:org/name@../../x", None), ("hf-hub:org/name", "/tmp"),
    ("hf-hub:../name", None), ("hf-hub:/abs/path", None), ("hf-hub:org/name@a//b", None),
])
def test_hub_names_never_resolve_to_local_paths(name, revision, saved, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("the name should have been refused before any Hub call")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_download)
    with pytest.raises(ValueError, match="is not a Hub"):
        ur.load_model(name, revision=revision)


def test_hub_revisions_that_exist_are_accepted():
    for revision in ("main", "v1.0", "refs/pr/3", "0123456789abcdef0123456789abcdef01234567"):
        hub.check_hub_name("org/name", revision)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_weight_files_are_written_with_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = tiny_model().save_pretrained(tmp_path / "model")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes == dict.fromkeys(hub.CHECKPOINT_FILES, 0o666 & ~umask)


# ------------------------------------------------------------------------- 7. config errors are one line
@pytest.mark.parametrize("architecture, message", [(None, "has no 'architecture'"),
                                                   ("no_such_net", "architecture 'no_such_net' is not a timm model")])
def test_missing_or_unknown_architecture_is_a_clear_error(folder, capsys, architecture, message):
    edit_config(folder, lambda c: c.pop("architecture") if architecture is None
                else c.update(architecture=architecture))
    with pytest.raises(ValueError, match=message):
        ur.load_model(folder)
    assert main(["predict", "--model", str(folder), str(folder / "missing.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(folder / "config.json") in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("key", ["correction", "method_arg", "embed_dims"])
def test_a_config_key_that_is_not_read_is_refused_not_ignored(folder, key):
    """A method argument outside method_args (or a typo) would load the model with the default value."""
    edit_config(folder, lambda c: c["uncertain_repr"].update({key: 0.5}))
    with pytest.raises(ValueError, match=rf"config.json: the 'uncertain_repr' block has keys this uncertain_repr "
                                         rf".* does not read: {key} \(a method's arguments go in method_args\)"):
        ur.load_model(folder)


def test_every_shipped_config_has_only_keys_that_are_read():
    for name in ur.list_pretrained():
        if ur.pretrained.get_pretrained(name).package_files:
            assert ur.load_model(name).method_name


@pytest.mark.parametrize("key, value, error, message", [
    ("embed_dim", 32, ValueError, "embed_dim=32, but the backbone gives 64-d embeddings"),
    ("stopgrad", "yes", TypeError, "stopgrad must be True or False, got 'yes'"),
    ("method_args", {"widht": 8}, TypeError, "unexpected keyword argument 'widht'"),
])
def test_a_config_that_does_not_rebuild_the_model_is_named_in_the_error(folder, key, value, error, message):
    """The user did not pass embed_dim= or stopgrad=: the error must say they came from config.json."""
    edit_config(folder, lambda c: c["uncertain_repr"].update({key: value}))
    with pytest.raises(error, match=rf"copy/config.json: its 'uncertain_repr' block \(method, method_args, stopgrad, "
                                    rf"embed_dim\) does not rebuild a model: .*{message}.*; fix the config"):
        ur.load_model(folder)
