"""Converting checkpoints of the original research code: safety, layout inference, exact outputs."""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings

import pytest
import timm
import torch

import uncertain_repr as ur
from uncertain_repr import convert
from uncertain_repr.cli import main

HEAD = "unc_module.unc_module."


def training_args(arch, width, depth, **overrides):
    """An ``argparse.Namespace`` like the original train.py's (the uncertainty-relevant subset)."""
    values = dict(
        model=arch, unc_module="pred-net", unc_width=width, unc_depth=depth, loss="losspred-order",
        inv_temp=28.0, stopgrad=True, unc_start_value=0.0, initial_checkpoint="", img_size=None,
        lr=1e-3, opt="lamb", epochs=32, batch_size=128, dataset="hdf5/imagenet21k", seed=0,
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def original_state(arch, width, depth, seed):
    """Wrapper state dict with the original key layout: ``model.<timm keys>`` + ``unc_module.unc_module.{0,2,..}``."""
    torch.manual_seed(seed)
    backbone = timm.create_model(arch, pretrained=False)
    state = {f"model.{k}": v.clone() for k, v in backbone.state_dict().items()}
    dims = [backbone.num_features] + [width] * depth + [1]
    for layer in range(depth + 1):
        bound = 1 / math.sqrt(dims[layer])
        state[f"{HEAD}{2 * layer}.weight"] = torch.empty(dims[layer + 1], dims[layer]).uniform_(-bound, bound)
        state[f"{HEAD}{2 * layer}.bias"] = torch.empty(dims[layer + 1]).uniform_(-bound, bound)
    return state


def original_checkpoint(arch, width=24, depth=2, *, ema=False, **args):
    state = original_state(arch, width, depth, seed=1)
    checkpoint = {
        "epoch": 31,
        "arch": arch,
        "state_dict": state,
        "optimizer": {
            "state": {i: {"exp_avg": torch.randn(3), "exp_avg_sq": torch.rand(3)} for i in range(3)},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1, 2]}],
        },
        "version": 2,
        "args": training_args(arch, width, depth, **args),
        "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0},
        "metric": 0.7123,
    }
    if ema:
        checkpoint["state_dict_ema"] = original_state(arch, width, depth, seed=2)
    return checkpoint


def reference_outputs(state, arch, x):
    """What the original wrapper returns, computed here from the raw tensors with the spec's formula.

    features = forward_head(forward_features(x), pre_logits=True); logits = head(features);
    unc = 1e-6 + softplus(Linear(... LeakyReLU(0.01)(Linear(features)) ...)).
    """
    backbone = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    net = timm.create_model(arch, pretrained=False, num_classes=backbone["head.weight"].shape[0]).eval()
    net.load_state_dict(backbone)
    with torch.no_grad():
        features = net.forward_head(net.forward_features(x), pre_logits=True)
        logits = features @ backbone["head.weight"].T + backbone["head.bias"]
        layers = sorted({int(k[len(HEAD):].split(".")[0]) for k in state if k.startswith(HEAD)})
        h = features
        for i in layers:
            h = h @ state[f"{HEAD}{i}.weight"].T + state[f"{HEAD}{i}.bias"]
            if i != layers[-1]:
                h = torch.where(h > 0, h, 0.01 * h)
        unc = 1e-6 + torch.log1p(torch.exp(h[:, 0]))
    return features, unc, logits


def assert_reproduces(folder, state, arch):
    model = ur.load_model(folder)
    x = torch.randn(3, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(5))
    features, unc, logits = reference_outputs(state, arch, x)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out.embedding, features, rtol=0, atol=0)
    torch.testing.assert_close(out.logits, logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.uncertainty, unc, rtol=1e-6, atol=1e-7)
    return model


def test_converts_test_vit_with_ema_args_and_optimizer(tmp_path):
    checkpoint = original_checkpoint("test_vit", width=24, depth=2, ema=True)
    torch.save(checkpoint, tmp_path / "last.pth.tar")
    result = convert.convert_checkpoint(tmp_path / "last.pth.tar", tmp_path / "out")
    assert result.max_abs_diff < 1e-6
    model = assert_reproduces(tmp_path / "out", checkpoint["state_dict_ema"], "test_vit")  # EMA preferred
    assert model.method_name == "pred-net" and model.method_args == {"width": 24, "depth": 2}
    assert model.stopgrad is True and float(model.method.scale) == 1.0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    training = config["uncertain_repr"]["training"]
    assert training["weights"] == "state_dict_ema" and training["epoch"] == 31 and training["metric"] == 0.7123
    assert training["loss"] == "losspred-order" and training["inv_temp"] == 28.0 and training["stopgrad"] is True
    assert training["arch"] == "test_vit" and training["unc_scaler"] == 1.0
    assert "optimizer" not in json.dumps(config) and "exp_avg" not in json.dumps(config)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| loss | `losspred-order` |" in card and "| epoch | `31` |" in card
    # the backbone is a plain timm checkpoint
    timm_model = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True)
    ema_backbone = {k[len("model."):]: v for k, v in checkpoint["state_dict_ema"].items() if k.startswith("model.")}
    assert all(torch.equal(timm_model.state_dict()[k], v) for k, v in ema_backbone.items())


def test_plain_state_dict_with_module_prefix(tmp_path):
    state = original_state("test_vit", 8, 1, seed=3)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="does not name its architecture"):
        convert.convert_checkpoint(tmp_path / "plain.pth", tmp_path / "out")
    convert.convert_checkpoint(tmp_path / "plain.pth", tmp_path / "out", arch="test_vit")
    model = assert_reproduces(tmp_path / "out", state, "test_vit")
    assert model.method_args == {"width": 8, "depth": 1} and model.stopgrad is True


def test_legacy_zip_free_format(tmp_path):
    checkpoint = original_checkpoint("test_vit", width=4, depth=1)
    torch.save(checkpoint, tmp_path / "old.pth.tar", _use_new_zipfile_serialization=False)
    convert.convert_checkpoint(tmp_path / "old.pth.tar", tmp_path / "out")
    assert_reproduces(tmp_path / "out", checkpoint["state_dict"], "test_vit")


@pytest.mark.slow
def test_cli_converts_a_real_vit_tiny_as_pvu_entry(tmp_path, capsys):
    arch = "vit_tiny_patch16_224.augreg_in21k"
    checkpoint = original_checkpoint(arch, width=512, depth=2)
    torch.save(checkpoint, tmp_path / "vit_tiny_checkpoint.pth.tar")
    out = tmp_path / "pvu" / "vit_tiny_patch16_224.pvu"
    argv = ["convert", str(tmp_path / "vit_tiny_checkpoint.pth.tar"), str(out), "--arch", "vit_tiny_patch16_224.pvu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "vit_tiny_patch16_224.augreg_in21k (21843 classes, D=192) + pred-net(width=512, depth=2)" in printed
    assert "verified against the original formula" in printed
    model = assert_reproduces(out, checkpoint["state_dict"], arch)
    assert model.config["backbone"] == arch and model.num_classes == 21843
    card = (out / "README.md").read_text()
    assert "# vit_tiny_patch16_224.pvu" in card and "arXiv:2402.16569" in card and "ImageNet-21k" in card
    assert "drive.google.com" in card and '- "pvu"' in card
    assert (out / "config.json").is_file() and not list(tmp_path.glob("pvu/.*"))  # no temporary folder left


def test_pvu_entry_rejects_a_checkpoint_of_another_size(tmp_path):
    torch.save(original_state("test_vit", 8, 1, seed=0), tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="is not a vit_tiny_patch16_224.pvu checkpoint: embedding width 64 and 1000 "
                       "classes, expected 192 and 21843"):
        convert.convert_checkpoint(tmp_path / "plain.pth", tmp_path / "out", arch="vit_tiny_patch16_224.pvu")
    torch.save(original_checkpoint("test_vit", 8, 1), tmp_path / "ckpt.pth.tar")
    with pytest.raises(ValueError, match="disagrees with the checkpoint's own architecture 'test_vit'"):
        convert.convert_checkpoint(tmp_path / "ckpt.pth.tar", tmp_path / "out", arch="vit_tiny_patch16_224.pvu")
    assert not (tmp_path / "out").exists()


def test_backbone_keys_are_checked_strictly(tmp_path):
    state = original_state("test_vit", 8, 1, seed=0)
    state["model.blocks.0.extra"] = state.pop("model.blocks.0.norm1.weight")
    torch.save(state, tmp_path / "plain.pth")
    with pytest.raises(ValueError, match=r"the backbone of .*plain.pth \(as 'test_vit'; check --arch\) does not match "
                       r"the model: missing keys: blocks.0.norm1.weight; unexpected keys: blocks.0.extra"):
        convert.convert_checkpoint(tmp_path / "plain.pth", tmp_path / "out", arch="test_vit")


class WritesMarker:
    """Unpickling this would run ``open(path, 'w')``: the payload of a malicious checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("where", ["args", "state_dict"])
def test_malicious_pickle_is_refused_without_running(tmp_path, where):
    marker = tmp_path / "PWNED"
    checkpoint = original_checkpoint("test_vit", width=4, depth=1)
    if where == "args":
        checkpoint["args"] = WritesMarker(str(marker))
    else:
        checkpoint["state_dict"]["model.payload"] = WritesMarker(str(marker))
    torch.save(checkpoint, tmp_path / "evil.pth.tar")
    assert not marker.exists()
    with pytest.raises(ValueError, match="refusing to read .* outside the allow-list"):
        convert.convert_checkpoint(tmp_path / "evil.pth.tar", tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_unrecoverable_scaler_warns_and_is_recorded(tmp_path):
    torch.save(original_checkpoint("test_vit", width=4, depth=1, unc_start_value=0.5), tmp_path / "c.pth.tar")
    with pytest.warns(UserWarning, match="unc_start_value=0.5.*cannot be recovered; 1.0 is stored"):
        convert.convert_checkpoint(tmp_path / "c.pth.tar", tmp_path / "out")
    training = json.loads((tmp_path / "out" / "config.json").read_text())["uncertain_repr"]["training"]
    assert training["unc_scaler"].startswith("unknown") and training["unc_start_value"] == 0.5
    # with an initial checkpoint the original code never rescaled: nothing to warn about
    torch.save(
        original_checkpoint("test_vit", width=4, depth=1, unc_start_value=0.5, initial_checkpoint="pvu.pth.tar"),
        tmp_path / "d.pth.tar",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = convert.convert_checkpoint(tmp_path / "d.pth.tar", tmp_path / "out2")
    assert result.training["unc_scaler"] == 1.0


def test_url_era_args_without_stopgrad(tmp_path):
    checkpoint = original_checkpoint("test_vit", width=4, depth=3)
    del checkpoint["args"].stopgrad
    torch.save(checkpoint, tmp_path / "url.pth.tar")
    convert.convert_checkpoint(tmp_path / "url.pth.tar", tmp_path / "out")
    model = assert_reproduces(tmp_path / "out", checkpoint["state_dict"], "test_vit")
    assert model.stopgrad is False and model.method_args == {"width": 4, "depth": 3}


def test_verification_failure_writes_nothing(tmp_path, monkeypatch):
    torch.save(original_checkpoint("test_vit", width=4, depth=1), tmp_path / "c.pth.tar")
    wrong = convert.original_pred_net_uncertainty
    monkeypatch.setattr(convert, "original_pred_net_uncertainty", lambda f, h: wrong(f, h) + 1e-3)
    with pytest.raises(RuntimeError, match="the uncertainty of the converted checkpoint differs"):
        convert.convert_checkpoint(tmp_path / "c.pth.tar", tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["c.pth.tar"]


def test_unsupported_and_broken_inputs(tmp_path):
    checkpoint = original_checkpoint("test_vit", width=4, depth=1, unc_module="class-entropy")
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(HEAD)}
    torch.save(checkpoint, tmp_path / "entropy.pth.tar")
    with pytest.raises(ValueError, match="no pred-net head .*unc_module='class-entropy'"):
        convert.convert_checkpoint(tmp_path / "entropy.pth.tar", tmp_path / "out")
    deep = original_checkpoint("test_vit", width=4, depth=1)
    deep["state_dict"]["feature_unc_modules.unc0.net.0.weight"] = torch.zeros(4, 64)
    torch.save(deep, tmp_path / "deep.pth.tar")
    with pytest.raises(ValueError, match="keys outside 'model.\\*'.*feature_unc_modules.unc0.net.0.weight"):
        convert.convert_checkpoint(tmp_path / "deep.pth.tar", tmp_path / "out")
    gap = original_checkpoint("test_vit", width=4, depth=1)
    gap["state_dict"][f"{HEAD}6.weight"] = gap["state_dict"].pop(f"{HEAD}2.weight")
    gap["state_dict"][f"{HEAD}6.bias"] = gap["state_dict"].pop(f"{HEAD}2.bias")
    torch.save(gap, tmp_path / "gap.pth.tar")
    with pytest.raises(ValueError, match="the pred-net head has an unexpected layout"):
        convert.convert_checkpoint(tmp_path / "gap.pth.tar", tmp_path / "out")
    (tmp_path / "truncated.pth.tar").write_bytes((tmp_path / "gap.pth.tar").read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.pth.tar is not a readable torch checkpoint"):
        convert.convert_checkpoint(tmp_path / "truncated.pth.tar", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="original checkpoint not found"):
        convert.convert_checkpoint(tmp_path / "missing.pth.tar", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_reports_errors_with_status_2(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing.pth.tar"), str(tmp_path / "out")]) == 2
    assert "uncertain-repr convert: error: original checkpoint not found" in capsys.readouterr().err
