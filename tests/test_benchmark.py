"""The URL benchmark runner on synthetic data: numbers vs independent references, files, errors, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from torch import nn

import uncertain_repr as ur
from uncertain_repr import benchmark
from uncertain_repr.cli import main

METHODS = ["class-entropy", "embed-norm", "max-prob"]


class Synthetic(torch.utils.data.Dataset):
    """``n`` 3x8x8 images of ``classes`` noisy prototypes; optional soft labels and crops."""

    def __init__(self, n: int, classes: int, seed: int, *, soft: bool = False, crops: bool = True, nan_at=None):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, classes, (n,), generator=g)
        self.images = torch.randn(classes, 3, 8, 8, generator=g)[self.labels] + 1.5 * torch.randn(n, 3, 8, 8, generator=g)
        self.soft = torch.randint(0, 5, (n, classes), generator=g).float() if soft else None
        self.fractions = 0.1 + 0.65 * torch.rand(n, generator=g)
        self.crops = crops
        if nan_at is not None:
            self.images[nan_at, 0, 0, 0] = 1e6  # the model below turns this into a NaN embedding

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.images[i], "label": int(self.labels[i])}
        if self.soft is not None:
            item["soft_labels"] = self.soft[i]
        if self.crops:
            item["image_cropped"] = self.images[i] * self.fractions[i]
            item["crop_fraction"] = float(self.fractions[i])
        return item


class TinyNet(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(192, 16))
        self.head = nn.Linear(16, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        e = self.body(x)
        return torch.where(x[:, :1, 0, 0] > 1e5, torch.full_like(e, float("nan")), e)


def tiny_model() -> ur.Uncertainizer:
    torch.manual_seed(0)
    net = TinyNet()
    return ur.Uncertainizer(net, "class-entropy", features=net.embed, classifier=net.head)


def datasets():
    return {"a": Synthetic(120, 5, 1, soft=True), "b": Synthetic(90, 7, 2)}


def upstream():
    return ("up", Synthetic(100, 5, 3))


def run_tiny(**kwargs):
    args = dict(upstream=upstream(), methods=METHODS, batch_size=32, num_workers=0, progress=False)
    args.update(kwargs)
    return benchmark.run(tiny_model(), datasets(), **args)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return run_tiny(out=out, save_embeddings=True), out


def _nn_correct(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Dense numpy cosine 1-NN, the query excluded by index."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return labels[sim.argmax(axis=1)] == labels


def test_numbers_match_independent_references(saved_run):
    result, out = saved_run
    for name in ("up", "a", "b"):
        o = benchmark.load_npz(out / "embeddings" / f"{name}.npz")
        ds = dict(datasets(), up=upstream()[1])[name]
        assert np.array_equal(o.indices, np.arange(len(ds))) and np.array_equal(o.labels, ds.labels.numpy())
        correct = _nn_correct(o.embeddings.astype(np.float64), o.labels)
        for row, method in enumerate(METHODS):
            m = result["metrics"][method]
            unc = o.uncertainties[row]
            assert m[f"{name}_r1"] == pytest.approx(correct.mean(), abs=1e-12)
            assert m[f"{name}_auroc_correct"] == pytest.approx(roc_auc_score(~correct, unc), abs=1e-12)
            bigger = (o.uncertainties_cropped[row] > unc).mean()
            assert m[f"{name}_croppedHasBiggerUnc"] == pytest.approx(bigger, abs=1e-12)
            rho = spearmanr(-o.uncertainties_cropped[row], o.crop_fractions)[0]
            assert m[f"{name}_rcorr_crop_unc"] == pytest.approx(rho, abs=1e-9)
            assert m[f"{name}_unc_q75"] == pytest.approx(np.quantile(unc.astype(np.float64), 0.75), abs=1e-7)
    # The uncertainties are the methods' formulas applied to the model's own outputs.
    net_model = tiny_model()
    o = benchmark.load_npz(out / "embeddings" / "a.npz")
    with torch.no_grad():
        emb = net_model.forward_embedding(datasets()["a"].images)
        p = net_model.classifier(emb).softmax(dim=1)
    np.testing.assert_allclose(o.embeddings, emb.numpy(), atol=1e-6)
    np.testing.assert_allclose(o.uncertainties[1], 1 / emb.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(o.uncertainties[2], 1 - p.max(dim=1).values.numpy(), atol=1e-6)


def test_soft_labels_classification_and_averages(saved_run):
    result, out = saved_run
    a = benchmark.load_npz(out / "embeddings" / "a.npz")
    up = benchmark.load_npz(out / "embeddings" / "up.npz")
    m = result["metrics"]["embed-norm"]
    # Sorted rows: permuted vote rows have exactly tied entropies, as the metric computes them.
    counts = np.sort(a.soft_labels.astype(np.float64), axis=1)
    q = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(q > 0, q * np.log(q), 0.0), axis=1)
    valid = a.soft_labels.sum(axis=1) > 0
    assert m["a_rcorr_entropy"] == pytest.approx(spearmanr(a.uncertainties[1][valid], entropy[valid])[0], abs=1e-9)
    # Saved outputs hold the logits of every set; classification only on the upstream set (the default).
    assert up.logits is not None and a.logits is not None and a.predictions is not None
    np.testing.assert_array_equal(a.predictions, a.logits.argmax(1))
    assert m["up_top1"] == pytest.approx((up.logits.argmax(1) == up.labels).mean(), abs=1e-12)
    assert not any(k.endswith("_top1") for k in m if not k.startswith("up_"))
    # Averages over the downstream sets that have the metric; rcorr_entropy only exists for "a".
    assert m["avg_downstream_r1"] == pytest.approx((m["a_r1"] + m["b_r1"]) / 2, abs=1e-12)
    assert m["avg_downstream_rcorr_entropy"] == m["a_rcorr_entropy"]
    assert "avg_downstream_top1" not in m and "b_rcorr_entropy" not in m


def test_mixed_id_ood_on_equal_seeded_subsets(saved_run):
    result, out = saved_run
    up = benchmark.load_npz(out / "embeddings" / "up.npz")
    for name in ("a", "b"):
        ood = benchmark.load_npz(out / "embeddings" / f"{name}.npz")
        n = min(len(up), len(ood))
        id_idx = benchmark.scoring.seeded_subset(up.indices, n, seed=0, dataset="up", purpose="mixed")
        ood_idx = benchmark.scoring.seeded_subset(ood.indices, n, seed=0, dataset=name, purpose="mixed")
        assert len(id_idx) == len(ood_idx) == n and len(np.unique(id_idx)) == n
        for row, method in enumerate(METHODS):
            u_id, u_ood = up.uncertainties[row][id_idx], ood.uncertainties[row][ood_idx]
            expected_ood = roc_auc_score(np.r_[np.zeros(n), np.ones(n)], np.r_[u_id, u_ood])
            assert result["metrics"][method][f"{name}_auroc_ood"] == pytest.approx(expected_ood, abs=1e-12)
            labels = np.r_[up.labels[id_idx], ood.labels[ood_idx] + 1000]  # disjoint class ids
            correct = _nn_correct(np.r_[up.embeddings[id_idx], ood.embeddings[ood_idx]].astype(np.float64), labels)
            expected = roc_auc_score(~correct, np.r_[u_id, u_ood])
            assert result["metrics"][method][f"{name}_auroc_correct_mixed"] == pytest.approx(expected, abs=1e-12)
    # The subsets depend on (seed, dataset), not on global files: another seed draws others.
    other = benchmark.scoring.seeded_subset(np.arange(100), 50, seed=1, dataset="up", purpose="mixed")
    assert not np.array_equal(other, benchmark.scoring.seeded_subset(np.arange(100), 50, seed=0, dataset="up", purpose="mixed"))


def test_recompute_from_npz_equals_original_and_files(saved_run, tmp_path):
    result, out = saved_run
    again = benchmark.recompute(out / "embeddings", out=tmp_path)
    assert again["metrics"] == result["metrics"] and again["controls"] == result["controls"]  # exactly
    assert again["meta"]["recomputed_from"] == str(out / "embeddings")
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["metrics"] == result["metrics"] and on_disk == benchmark.load_results(out)
    meta = on_disk["meta"]
    assert len(meta["weights_sha256"]) == 64 and meta["seed"] == 0 and meta["methods"] == METHODS
    assert {"uncertain_repr", "torch", "timm"} <= set(meta["versions"]) and meta["date"].startswith("20")
    assert [d["name"] for d in meta["data"]["datasets"]] == ["up", "a", "b"]
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == METHODS + ["random", "sharpness"]
    assert [r["kind"] for r in rows] == ["method"] * 3 + ["control"] * 2
    assert float(rows[1]["avg_downstream_auroc_correct"]) == result["metrics"]["embed-norm"]["avg_downstream_auroc_correct"]
    report = (out / "report.md").read_text()
    assert "avg_downstream" in report and meta["weights_sha256"] in report


def test_methods_from_one_pass_equal_separate_runs(saved_run):
    result, _ = saved_run
    alone = run_tiny(methods=["embed-norm"])
    assert alone["metrics"]["embed-norm"] == result["metrics"]["embed-norm"]
    # Same batches as run_tiny: a matmul's float32 rounding may depend on the batch it is in.
    own = benchmark.run(tiny_model(), datasets(), upstream=upstream(), batch_size=32, num_workers=0, progress=False)
    assert list(own["metrics"]) == ["class-entropy"] and own["metrics"]["class-entropy"] == result["metrics"]["class-entropy"]


def test_max_samples_is_a_seeded_subset():
    first = benchmark.run(tiny_model(), {"a": Synthetic(120, 5, 1)}, max_samples=50, num_workers=0, progress=False)
    again = benchmark.run(tiny_model(), {"a": Synthetic(120, 5, 1)}, max_samples=50, num_workers=0, progress=False)
    assert first["metrics"] == again["metrics"] and first["meta"]["data"]["datasets"][0]["num_samples"] == 50


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"dataset 'a' for image index 37\b"):
        benchmark.run(tiny_model(), {"a": Synthetic(60, 5, 1, nan_at=37)}, num_workers=0, progress=False)
    with pytest.raises(ValueError, match="unknown dataset 'repr/nope'"):
        benchmark.run(tiny_model(), ["repr/nope"], tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        benchmark.run(tiny_model(), ["soft/cifar10h"], tmp_path, progress=False)
    with pytest.raises(ValueError, match="data_dir is needed"):
        benchmark.run(tiny_model(), ["soft/cifar10h"], progress=False)
    with pytest.raises(ValueError, match="method pred-net has weights that the model does not carry"):
        benchmark.run(tiny_model(), datasets(), methods=["embed-norm", "pred-net"], progress=False)
    with pytest.raises(ValueError, match=r"pass out= \(a folder; --out on the command line\)"):
        benchmark.run(tiny_model(), datasets(), save_embeddings=True, progress=False)
    with pytest.raises(ValueError, match="classify names datasets that are not evaluated"):
        benchmark.run(tiny_model(), datasets(), classify=["c"], progress=False)
    with pytest.raises(TypeError, match="wrap a plain network"):
        benchmark.run(TinyNet(), datasets(), progress=False)
    with pytest.raises(ValueError, match=r"datasets \['x/a_b', 'x_a/b'\] would save their embeddings to the same file"):
        benchmark.run(tiny_model(), {"x/a_b": Synthetic(20, 5, 1), "x_a/b": Synthetic(20, 5, 2)}, out=tmp_path,
                      save_embeddings=True, progress=False)  # was: x_a_b.npz of the first overwritten by the second
    with pytest.raises(ValueError, match=r"upstream_split='validation' \(--upstream-split\) .* no upstream set is given"):
        benchmark.run(tiny_model(), datasets(), upstream_split="validation", progress=False)  # was: ignored
    with pytest.raises(ValueError, match=r"but the upstream set is a \(name, dataset\) pair"):
        benchmark.run(tiny_model(), datasets(), upstream=upstream(), upstream_split="validation", progress=False)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        benchmark.recompute(tmp_path)


@pytest.mark.slow
def test_plots_and_report(tmp_path):
    pytest.importorskip("matplotlib")
    result = run_tiny(out=tmp_path, plots=True)
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["crop_uncertainty.png", "r_auroc.png", "risk_coverage.png", "uncertainty_histograms.png"]
    for name in names:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name})" in (tmp_path / "report.md").read_text()
    assert result["metrics"]["max-prob"]["a_r1"] > 0


def test_missing_matplotlib_fails_only_when_plots_are_asked_for(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'uncertain-repr\[plot\]'"):
        run_tiny(out=tmp_path, plots=True)
    assert not (tmp_path / "results.json").exists()
    run_tiny(out=tmp_path)  # no plots asked for: fine
    assert (tmp_path / "results.json").is_file()


def test_cli_compare_and_from_npz(saved_run, tmp_path, capsys):
    result, out = saved_run
    other = tmp_path / "other.json"
    other.write_text(json.dumps(run_tiny(methods=["embed-norm"], seed=1)))
    assert main(["benchmark", "--compare", str(out / "results.json"), str(other)]) == 0
    table = capsys.readouterr().out
    header, _, *rows = table.splitlines()
    assert f"{out / 'results.json'} [max-prob]" in header and f"{other} [embed-norm]" in header
    first = rows[0].split("|")
    assert f"{other} [random (control)]" in header
    assert first[1].strip() == "avg_downstream_r1" and len(first) == 1 + 1 + 4 + 4 + 1  # metric + 3 + 1 runs + 2x2 controls
    assert main(["benchmark", "--from-npz", str(out / "embeddings"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == result["metrics"]
    assert main(["benchmark", "--compare", str(tmp_path / "missing.json")]) == 2
    assert "no benchmark results" in capsys.readouterr().err
    assert main(["benchmark", "--datasets", "a"]) == 2
    assert "exactly one of --model, --compare, --from-npz" in capsys.readouterr().err


def test_cli_refuses_options_that_from_npz_and_compare_would_ignore(saved_run, tmp_path, capsys):
    result, out = saved_run
    assert "bootstrap" not in result  # the saved run had none: --bootstrap here would have been dropped silently
    assert main(["benchmark", "--from-npz", str(out / "embeddings"), "--bootstrap", "50", "--seed", "3", "--json"]) == 2
    err = capsys.readouterr().err
    assert "--bootstrap, --seed: not used with --from-npz" in err and "Traceback" not in err
    assert main(["benchmark", "--compare", str(out / "results.json"), "--out", str(tmp_path / "x"), "--num-workers", "0"]) == 2
    assert "--num-workers, --out: not used with --compare" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # what they do use still works, and the defaults given explicitly are no error
    assert main(["benchmark", "--from-npz", str(out / "embeddings"), "--out", str(tmp_path / "y"), "--seed", "0"]) == 0
    assert (tmp_path / "y" / "results.json").is_file()


def test_import_uncertain_repr_does_not_import_benchmark():
    code = "import sys, uncertain_repr; print('uncertain_repr.benchmark' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def _resampled_auroc(unc, positives, key, n):
    rng = np.random.default_rng(key)
    out = []
    for _ in range(n):
        idx = rng.integers(0, len(unc), size=len(unc))
        out.append(roc_auc_score(positives[idx], unc[idx]))
    return np.array(out)


def test_bootstrap_mixed_and_average_intervals_vs_plain_numpy(tmp_path):
    import zlib

    result = run_tiny(bootstrap=60, out=tmp_path, save_embeddings=True)
    boot, R = result["bootstrap"], 60
    up = benchmark.load_npz(tmp_path / "embeddings" / "up.npz")
    per_dataset = []
    for name in ("a", "b"):
        ood = benchmark.load_npz(tmp_path / "embeddings" / f"{name}.npz")
        n = min(len(up), len(ood))
        id_idx = benchmark.scoring.seeded_subset(up.indices, n, seed=0, dataset="up", purpose="mixed")
        ood_idx = benchmark.scoring.seeded_subset(ood.indices, n, seed=0, dataset=name, purpose="mixed")
        unc = np.r_[up.uncertainties[1][id_idx], ood.uncertainties[1][ood_idx]].astype(np.float64)
        key = [0, zlib.crc32(name.encode()), zlib.crc32(b"bootstrap-mixed")]
        values = _resampled_auroc(unc, np.r_[np.zeros(n, bool), np.ones(n, bool)], key, R)
        got = boot["intervals"]["embed-norm"][f"{name}_auroc_ood"]
        assert got == pytest.approx(np.percentile(values, [2.5, 97.5]), abs=1e-12)
        correct = _nn_correct(ood.embeddings.astype(np.float64), ood.labels)
        per_dataset.append(_resampled_auroc(ood.uncertainties[1].astype(np.float64), ~correct,
                                            [0, zlib.crc32(name.encode()), zlib.crc32(b"bootstrap")], R))
    # the average's interval: the mean of the datasets' resampled values
    avg = boot["intervals"]["embed-norm"]["avg_downstream_auroc_correct"]
    assert avg == pytest.approx(np.percentile(np.mean(per_dataset, axis=0), [2.5, 97.5]), abs=1e-12)
    assert set(boot["intervals"]) == set(METHODS) | {"random", "sharpness"}
    assert set(boot["differences"]) == {"class-entropy - embed-norm", "class-entropy - max-prob", "embed-norm - max-prob"} | {
        f"{m} - {c}" for m in METHODS for c in ("random", "sharpness")}
    assert "a_r1" not in boot["differences"]["embed-norm - max-prob"]  # R@1 does not depend on the method


def test_joined_shards_are_in_index_order_whatever_order_they_come_in():
    # nn_correct runs on the joined outputs, the Evaluator orders by index: both must see one order
    part = lambda idx: benchmark.DatasetOutputs(  # noqa: E731
        name="s", methods=("m",), indices=np.array(idx), labels=np.array(idx) % 2,
        embeddings=np.array(idx, np.float32)[:, None] * [1, 2], uncertainties=np.array([idx], np.float32) / 10)
    joined = benchmark.outputs.concatenate([part([4, 2]), part([0, 3, 2, 1])])  # 2 twice (a padded shard)
    assert joined.indices.tolist() == [0, 1, 2, 3, 4] and joined.labels.tolist() == [0, 1, 0, 1, 0]
    assert joined.embeddings[:, 1].tolist() == [0, 2, 4, 6, 8]
    assert np.array_equal(joined.uncertainties, np.array([[0, 1, 2, 3, 4]], np.float32) / 10)


def test_bootstrap_with_every_query_a_singleton_left_out_is_undefined_not_a_crash():
    ds = Synthetic(30, 30, 1)
    ds.labels = torch.arange(30)  # one image per class, e.g. imagenet_sample1000
    with pytest.warns(UserWarning):
        result = benchmark.run(tiny_model(), {"s": ds}, methods=METHODS, num_workers=0, progress=False,
                               exclude_singleton_queries=True, bootstrap=10)
    for m in METHODS:
        assert result["metrics"][m]["s_r1"] is None and result["metrics"][m]["s_auroc_correct"] is None
        assert result["bootstrap"]["intervals"][m]["s_r1"] == [None, None]
        assert result["bootstrap"]["intervals"][m]["s_auroc_correct"] == [None, None]
    assert result["bootstrap"]["differences"]["class-entropy - max-prob"]["s_auroc_correct"]["difference"] is None


def test_bootstrap_has_no_classification_interval_where_the_metric_is_undefined():
    # "b" has 7 classes, the classifier 5: auroc_classification is undefined there (absent from the
    # metrics), so the bootstrap must not report an interval or a paired difference of it either
    result = run_tiny(bootstrap=20, classify=["up", "b"])
    for m in METHODS:
        assert "b_auroc_classification" not in result["metrics"][m] and "up_auroc_classification" in result["metrics"][m]
        bootstrapped = set(result["bootstrap"]["intervals"][m])
        assert "up_auroc_classification" in bootstrapped
        assert not {"b_auroc_classification", "avg_downstream_auroc_classification"} & bootstrapped
    for pair in result["bootstrap"]["differences"].values():
        assert "b_auroc_classification" not in pair and "avg_downstream_auroc_classification" not in pair
    rows = [line for line in benchmark.format_differences(result).splitlines() if "auroc_classification" in line]
    assert rows and all(line.split("|")[2].strip() == "up_auroc_classification" for line in rows)
