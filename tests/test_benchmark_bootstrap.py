"""Bootstrap intervals and paired differences vs a plain numpy bootstrap; the control uncertainties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image, ImageFilter
from sklearn.metrics import roc_auc_score

from uncertain_repr.benchmark.controls import random_uncertainty, sharpness_uncertainty
from uncertain_repr.metrics import (
    UndefinedMetricWarning,
    auroc,
    bootstrap_ci,
    nearest_neighbor_correct,
    paired_bootstrap_difference,
)


def _plain_bootstrap(stat, arrays, n_resamples, seed):
    """Textbook percentile bootstrap: resample rows with replacement, 2.5/97.5 percentiles."""
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        values.append(stat(*(a[idx] for a in arrays)))
    return np.array(values)


def _data(n=300, seed=1):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    labels = rng.integers(0, 6, size=n)
    correct = nearest_neighbor_correct(emb, labels).numpy()
    unc_a = (~correct) * 0.7 + rng.normal(size=n)  # informative
    unc_b = rng.normal(size=n)  # not informative
    return correct, unc_a, unc_b


def test_bootstrap_ci_matches_plain_numpy_bootstrap_for_r_auroc_and_r1():
    correct, unc, _ = _data()
    sk = lambda u, c: roc_auc_score(~c, u)  # noqa: E731  independent AUROC
    values = _plain_bootstrap(sk, [unc, correct], 200, seed=7)
    point, low, high = bootstrap_ci(lambda u, c: auroc(u, ~c), unc, correct, n_resamples=200, seed=7)
    assert point == pytest.approx(roc_auc_score(~correct, unc), abs=1e-12)
    assert (low, high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)
    r1 = _plain_bootstrap(np.mean, [correct], 300, seed=3)
    ci = bootstrap_ci(np.mean, torch.from_numpy(correct), n_resamples=300, seed=3, confidence=0.9)
    assert ci.point == pytest.approx(correct.mean())
    assert (ci.low, ci.high) == pytest.approx(tuple(np.percentile(r1, [5, 95])), abs=1e-12)
    assert ci.low < ci.point < ci.high


def test_paired_difference_matches_plain_numpy_and_detects_the_better_method():
    correct, unc_a, unc_b = _data()
    sk = lambda u, c: roc_auc_score(~c, u)  # noqa: E731
    a = _plain_bootstrap(sk, [unc_a, correct], 200, seed=0)
    b = _plain_bootstrap(sk, [unc_b, correct], 200, seed=0)  # same seed = same resamples
    d = paired_bootstrap_difference(lambda u, c: auroc(u, ~c), unc_a, unc_b, correct, n_resamples=200, seed=0)
    assert d.difference == pytest.approx(sk(unc_a, correct) - sk(unc_b, correct), abs=1e-12)
    assert (d.low, d.high) == pytest.approx(tuple(np.percentile(a - b, [2.5, 97.5])), abs=1e-12)
    assert d.p_value == pytest.approx(min(1, 2 * min(np.mean(a - b <= 0), np.mean(a - b >= 0))))
    assert d.low > 0 and d.p_value < 0.05
    same = paired_bootstrap_difference(lambda u, c: auroc(u, ~c), unc_b, unc_b, correct, n_resamples=50)
    assert same == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_is_seeded_and_validates_arguments():
    correct, unc, _ = _data(n=50)
    f = lambda u, c: auroc(u, ~c)  # noqa: E731
    assert bootstrap_ci(f, unc, correct, n_resamples=30, seed=5) == bootstrap_ci(f, unc, correct, n_resamples=30, seed=5)
    assert bootstrap_ci(f, unc, correct, n_resamples=30, seed=5) != bootstrap_ci(f, unc, correct, n_resamples=30, seed=6)
    with pytest.raises(ValueError, match="length mismatch"):
        bootstrap_ci(f, unc[:-1], correct)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(f, unc, correct, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(f, unc, correct, confidence=95)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci(np.mean)


def test_undefined_resamples_are_left_out_with_one_warning():
    correct = np.zeros(6, bool)
    correct[0] = True  # most resamples of 6 miss the single positive -> AUROC undefined
    unc = np.arange(6.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ci = bootstrap_ci(lambda u, c: auroc(u, ~c), unc, correct, n_resamples=100, seed=0)
    undefined = [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    assert len(undefined) == 1 and "resamples" in str(undefined[0].message)
    assert np.isfinite([ci.low, ci.high]).all()


def test_random_control_is_seeded_per_sample_and_uniform():
    idx = np.arange(1000)
    u = random_uncertainty(idx, seed=0, dataset="x")
    assert u.shape == (1000,) and 0 <= u.min() and u.max() < 1
    np.testing.assert_array_equal(random_uncertainty(idx[[5, 3, 900]], seed=0, dataset="x"), u[[5, 3, 900]])
    assert not np.array_equal(random_uncertainty(idx, seed=1, dataset="x"), u)
    assert not np.array_equal(random_uncertainty(idx, seed=0, dataset="y"), u)
    with pytest.raises(ValueError, match="indices"):
        random_uncertainty(np.array([0.5]))


def test_sharpness_matches_scipy_laplace_and_ranks_blur_higher():
    rng = np.random.default_rng(0)
    batch = rng.random((3, 3, 16, 20))
    expected = []
    for img in batch:
        grey = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        expected.append(-scipy.ndimage.laplace(grey)[1:-1, 1:-1].var())
    np.testing.assert_allclose(sharpness_uncertainty(torch.from_numpy(batch).float()), expected, rtol=1e-5)
    np.testing.assert_allclose(sharpness_uncertainty(batch), expected, rtol=1e-12)
    sharp = Image.fromarray((rng.random((32, 40, 3)) * 255).astype(np.uint8))
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    u = sharpness_uncertainty([sharp, blurred, sharp.resize((20, 24))])
    assert u.shape == (3,) and u[1] > u[0]
    with pytest.raises(ValueError, match="B, 3, H, W"):
        sharpness_uncertainty(np.zeros((3, 16, 16)))
    with pytest.raises(ValueError, match="3x3"):
        sharpness_uncertainty(np.zeros((1, 3, 2, 8)))
