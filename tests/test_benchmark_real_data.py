"""The benchmark on real data: the CIFAR-10 ResNet-20 on 200 CIFAR-10H images, checked independently.

The runner's saved outputs are checked against the network run by hand on the same images
(``read_cifar10_test`` of the example), and its metrics against sklearn ``roc_auc_score``, a
dense numpy 1-NN and scipy ``spearmanr``. Missing data skips locally and fails in CI.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from uncertain_repr import benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 200


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_resnet20_on_cifar10h_slice_matches_independent_computation(shared_data, tmp_path):
    data_dir = shared_data("cifar10h").parent
    images_dir = shared_data("cifar10_test_jpg")
    counts = np.load(shared_data("cifar10h", "cifar10h-counts.npy")).astype(np.float64)
    result = _module("run_benchmark").main(
        ["--model", "resnet20", "--data-dir", str(data_dir), "--max-samples", str(N_IMAGES),
         "--out", str(tmp_path), "--save-embeddings"]
    )
    saved = benchmark.load_npz(tmp_path / "embeddings" / "soft_cifar10h.npz")
    idx = saved.indices
    assert len(idx) == N_IMAGES and len(np.unique(idx)) == N_IMAGES and idx.max() < 10_000

    # The same images through the network by hand (independent of the data package and the runner).
    example = _module("wrap_custom_backbone")
    net = example.load_resnet20(shared_data("resnet_cifar10", "resnet20-12fca82f.th"))
    images, labels = example.read_cifar10_test(images_dir / "cifar10_test_jpg.tar", images_dir / "index.csv", idx.tolist())
    with torch.no_grad():
        emb = net.embed(images).double()
        logits = net.linear(emb.float()).double()
    np.testing.assert_array_equal(saved.labels, labels.numpy())
    np.testing.assert_allclose(saved.embeddings, emb.numpy(), atol=1e-4)
    p = logits.softmax(dim=1).numpy()
    uncertainties = {
        "class-entropy": -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1),
        "embed-norm": 1.0 / np.linalg.norm(emb.numpy(), axis=1),
        "max-prob": 1.0 - p.max(axis=1),
    }

    # Dense numpy cosine 1-NN, the query excluded by index.
    x = emb.numpy() / np.linalg.norm(emb.numpy(), axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    y = labels.numpy()
    correct = y[sim.argmax(axis=1)] == y
    q = counts[idx] / counts[idx].sum(axis=1, keepdims=True)
    human_entropy = -np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(axis=1)

    for method, unc in uncertainties.items():
        m = result["metrics"][method]
        ours = saved.uncertainties[list(saved.methods).index(method)]
        np.testing.assert_allclose(ours, unc, rtol=1e-4, atol=1e-6)
        assert m["soft/cifar10h_r1"] == pytest.approx(correct.mean(), abs=1e-12)
        # Exact on the runner's float32 uncertainties; close on the float64 ones (float32 makes ties).
        assert m["soft/cifar10h_auroc_correct"] == pytest.approx(roc_auc_score(~correct, ours), abs=1e-12)
        assert m["soft/cifar10h_rcorr_entropy"] == pytest.approx(spearmanr(ours, human_entropy)[0], abs=1e-9)
        assert m["soft/cifar10h_auroc_correct"] == pytest.approx(roc_auc_score(~correct, unc), abs=1e-2)
        assert m["soft/cifar10h_rcorr_entropy"] == pytest.approx(spearmanr(unc, human_entropy)[0], abs=1e-2)
        assert m["soft/cifar10h_top1"] == pytest.approx((p.argmax(axis=1) == y).mean(), abs=1e-12)
        assert 0.0 <= m["soft/cifar10h_croppedHasBiggerUnc"] <= 1.0
    # Real signal, not noise: class entropy flags wrong retrievals and ambiguous human labels.
    assert result["metrics"]["class-entropy"]["soft/cifar10h_auroc_correct"] > 0.7
    assert result["metrics"]["class-entropy"]["soft/cifar10h_rcorr_entropy"] > 0.15
    assert 0.6 < result["metrics"]["class-entropy"]["soft/cifar10h_r1"] < 0.95


def test_cli_on_a_checkpoint_folder(shared_data, tmp_path, capsys):
    import uncertain_repr as ur
    from uncertain_repr.cli import main

    data_dir = shared_data("cifar10h").parent
    shared_data("cifar10_test_jpg")
    checkpoint = ur.hub.save_pretrained(ur.Uncertainizer("test_efficientnet", "embed-norm"), tmp_path / "ckpt")
    argv = ["benchmark", "--model", str(checkpoint), "--datasets", "soft/cifar10h", "--data-dir", str(data_dir),
            "--max-samples", "40", "--batch-size", "20", "--num-workers", "0", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "soft/cifar10h (test split, 40 images" in table and "rcorr_entropy" in table
    assert "| embed-norm " in table and "| random (control) " in table and "| sharpness (control) " in table
    result = benchmark.load_results(tmp_path / "out")
    meta = result["meta"]
    assert meta["model"] == str(checkpoint) and meta["methods"] == ["embed-norm"]
    assert meta["command"].startswith("uncertain-repr benchmark --model ") and "--max-samples 40" in meta["command"]
    assert meta["data"]["datasets"][0]["num_samples"] == 40 and meta["data"]["datasets"][0]["dataset_size"] == 10_000
    assert set(result["metrics"]["embed-norm"]) >= {"soft/cifar10h_rcorr_entropy", "avg_downstream_auroc_correct"}
    # A dataset the data folder does not have, and a name that does not exist: exit status 2, one line.
    assert main(["benchmark", "--model", str(checkpoint), "--datasets", "repr/cub", "--data-dir", str(data_dir)]) == 2
    assert "cub" in capsys.readouterr().err
    assert main(["benchmark", "--model", str(checkpoint), "--datasets", "repr/nope", "--data-dir", str(data_dir)]) == 2
    assert "unknown dataset 'repr/nope'" in capsys.readouterr().err
