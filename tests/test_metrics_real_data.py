"""Metrics on real data: the CIFAR-10 ResNet-20 on 1,000 real CIFAR-10 test images + CIFAR-10H.

Every number is recomputed independently inside the test (sklearn NearestNeighbors,
sklearn roc_auc_score, scipy spearmanr, numpy entropy). Missing data skips locally, fails in CI.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from uncertain_repr import metrics as M

REPO_ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 1000


def _example_module():
    path = REPO_ROOT / "examples" / "wrap_custom_backbone.py"
    spec = importlib.util.spec_from_file_location("wrap_custom_backbone", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def resnet20_outputs(shared_data):
    require_data = shared_data
    weights = require_data("resnet_cifar10", "resnet20-12fca82f.th")
    images_dir = require_data("cifar10_test_jpg")
    counts = np.load(require_data("cifar10h", "cifar10h-counts.npy"))[:N_IMAGES]
    example = _example_module()
    net = example.load_resnet20(weights)
    images, labels = example.read_cifar10_test(
        images_dir / "cifar10_test_jpg.tar", images_dir / "index.csv", range(N_IMAGES)
    )
    with torch.no_grad():
        embeddings = net.embed(images)
        logits = net.linear(embeddings)
    probs = logits.double().softmax(dim=1)
    class_entropy = -(probs * probs.clamp_min(1e-300).log()).sum(dim=1)  # the class-entropy uncertainty
    return embeddings, logits, class_entropy.float(), labels, counts


def test_real_resnet20_r1_r_auroc_and_cifar10h(resnet20_outputs):
    embeddings, logits, unc, labels, counts = resnet20_outputs
    emb_np, unc_np, y = embeddings.numpy(), unc.numpy(), labels.numpy()

    # Independent 1-NN: sklearn brute-force cosine, self excluded by index among 2 neighbours.
    _, hits = NearestNeighbors(n_neighbors=2, algorithm="brute", metric="cosine").fit(emb_np).kneighbors(emb_np)
    own = np.arange(len(y))
    nn = np.where(hits[:, 0] == own, hits[:, 1], hits[:, 0])
    correct = y[nn] == y
    r1_ref = correct.mean()
    r_auroc_ref = roc_auc_score(~correct, unc_np)
    top1_ref = (logits.argmax(1).numpy() == y).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.sort(counts, axis=1)  # sorted: rows with the same votes tie exactly, as in exact arithmetic
        q = q / q.sum(axis=1, keepdims=True)
        h_gt = -np.where(q > 0, q * np.log(q), 0.0).sum(axis=1)
    rcorr_ref = spearmanr(unc_np, h_gt).statistic

    ev = M.Evaluator()
    for batch in torch.arange(N_IMAGES).split(128):
        ev.update(embeddings[batch], unc[batch], labels[batch], logits=logits[batch], soft_labels=counts[batch])
    out = ev.compute()

    assert out["r1"] == pytest.approx(r1_ref, abs=1e-12)
    assert out["auroc_correct"] == pytest.approx(r_auroc_ref, abs=1e-12)
    assert out["top1"] == pytest.approx(top1_ref, abs=1e-12)
    assert out["rcorr_entropy"] == pytest.approx(rcorr_ref, abs=1e-9)
    assert M.recall_at_1(embeddings, labels) == out["r1"]
    assert M.r_auroc(unc, embeddings, labels) == out["auroc_correct"]
    assert M.rcorr_entropy(unc, counts) == pytest.approx(rcorr_ref, abs=1e-9)

    # The real network is neither broken nor random (README: 81.0% top-1 on these JPEGs; model
    # entropy vs CIFAR-10H entropy Spearman ~0.26 on all 10,000 images).
    assert 0.75 < out["top1"] < 0.87
    assert 0.70 < out["r1"] < 0.90
    assert 0.65 < out["auroc_correct"] < 0.95
    assert 0.12 < out["rcorr_entropy"] < 0.40


def test_cifar10h_permuted_vote_rows_tie_exactly(shared_data):
    """On the real CIFAR-10H counts, rows with the same multiset of votes get one entropy; the
    original's float32 formula (clamped log) breaks some of those ties."""
    counts = np.load(shared_data("cifar10h", "cifar10h-counts.npy"))[:N_IMAGES]
    groups: dict = {}
    for i, row in enumerate(counts.tolist()):
        groups.setdefault(tuple(sorted(row)), []).append(i)
    ours = M.soft_label_entropy(counts).numpy()
    q = torch.from_numpy(counts).float()
    q = q / q.sum(1, keepdim=True)
    original = -(q * q.log().clamp(min=torch.finfo(torch.float32).min)).sum(1).double().numpy()

    def broken(h):  # extra distinct values inside groups that should tie
        return sum(len(set(h[g].tolist())) - 1 for g in groups.values())

    assert broken(ours) == 0 and broken(original) > 0
    by_row = np.empty(len(counts))
    for votes, members in groups.items():  # one exact value per multiset of votes (plain Python)
        by_row[members] = -sum(v / sum(votes) * math.log(v / sum(votes)) for v in votes if v)
    np.testing.assert_allclose(ours, by_row, rtol=1e-13)
    unc = ours + np.random.default_rng(0).standard_normal(len(counts)) * 0.3
    assert M.rcorr_entropy(unc, counts) == pytest.approx(spearmanr(unc, by_row).statistic, abs=1e-12)
