"""`uncertain-repr benchmark` on one's own data, through the CLI in a subprocess, on a tiny real image folder.

Covers --class-map, name:split, progress log lines off a TTY, the .npz contents (paths, logits
of every set, sharpness), --bootstrap (vs a plain numpy bootstrap), the control rows, singleton
queries, and soft/treeversity1 in the original's fold*/ + annotations.json layout.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image, ImageFilter
from sklearn.metrics import roc_auc_score

import uncertain_repr as ur
from uncertain_repr import benchmark
from uncertain_repr.benchmark.progress import progress_mode, track
from uncertain_repr.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO_ROOT / "examples" / "images").iterdir())
CLASS_MAP = ["zebra", "apple"]  # line order = class id; sorted folder order would be the reverse


def _save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """``root/mine/validation/{zebra,apple}/`` (7 real images + blurred copies) and ``root/Treeversity#1``."""
    root = tmp_path_factory.mktemp("data")
    images = [Image.open(p).convert("RGB").resize((48, 40)) for p in SAMPLES]
    for i, image in enumerate(images):  # some blurred copies in the other class: their 1-NN may be wrong
        folder, blurred_folder = "zebra" if i < 4 else "apple", "zebra" if i in (0, 1, 4) else "apple"
        _save(image, root / "mine" / "validation" / folder / f"{i}.png")
        _save(image.filter(ImageFilter.GaussianBlur(3)), root / "mine" / "validation" / blurred_folder / f"{i}_blur.png")
    (root / "classes.txt").write_text("\n".join(CLASS_MAP) + "\n")
    votes = [[0, 0, 1, 1, 2, 1], [0, 1, 1, 1, 2, 0]]  # two annotators; fold2 = test
    paths = [f"Treeversity#1/fold{2 if i < 6 else 1}/{i}.png" for i in range(7)]
    for i, path in enumerate(paths):
        _save(images[i], root / path)
    annotations = [{"annotations": [{"image_path": p, "class_label": f"c{v[i]}" if i < 6 else "c0"}
                                    for i, p in enumerate(paths)]} for v in votes]
    (root / "Treeversity#1" / "annotations.json").write_text(json.dumps(annotations))
    model = ur.Uncertainizer("test_vit", "class-entropy").eval()
    ckpt = model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "model")
    return root, ckpt, model


@pytest.fixture(scope="module")
def cli_run(own_data, tmp_path_factory):
    root, ckpt, _ = own_data
    out = tmp_path_factory.mktemp("out")
    command = [
        sys.executable, "-m", "uncertain_repr.cli", "benchmark", "--model", str(ckpt),
        "--methods", "class-entropy,embed-norm", "--datasets", "folder/mine:validation,soft/treeversity1",
        "--data-dir", str(root), "--class-map", f"folder/mine={root / 'classes.txt'}", "--bootstrap", "200",
        "--out", str(out), "--save-embeddings", "--num-workers", "0", "--batch-size", "4",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)  # stderr is a pipe, no TTY
    assert done.returncode == 0, done.stderr
    return done, out, json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_class_map_split_per_dataset_and_progress_lines(cli_run, own_data):
    done, out, result = cli_run
    root = own_data[0]
    # progress off a TTY: a line after the first batch and at the end of every dataset
    assert "folder/mine: 4/14 images" in done.stderr and "folder/mine: 14/14 images" in done.stderr
    assert "soft/treeversity1: 6/6 images" in done.stderr and "img/s" in done.stderr
    info = {d["name"]: d for d in result["meta"]["data"]["datasets"]}
    assert info["folder/mine"]["split"] == "validation" and info["soft/treeversity1"]["split"] == "test"
    assert "--class-map folder/mine=" in result["meta"]["command"]
    mine = benchmark.load_npz(out / "embeddings" / "folder_mine.npz")
    # labels follow the class map; the sample ids are the image paths
    folders = [Path(p).parent.name for p in mine.sample_ids]
    assert mine.labels.tolist() == [CLASS_MAP.index(f) for f in folders]
    assert sorted(mine.sample_ids) == sorted(str(p) for p in (root / "mine" / "validation").rglob("*.png"))
    tree = benchmark.load_npz(out / "embeddings" / "soft_treeversity1.npz")
    assert [Path(p).parent.name for p in tree.sample_ids] == ["fold2"] * 6
    # logits of every set, although none is a classify set
    for o in (mine, tree):
        assert o.logits.shape == (len(o), 1000) and np.array_equal(o.predictions, o.logits.argmax(1))


@pytest.mark.slow
def test_soft_treeversity1_votes_and_singleton_queries(cli_run):
    _, out, result = cli_run
    tree = benchmark.load_npz(out / "embeddings" / "soft_treeversity1.npz")
    # votes c0: [2,0,0], [1,1,0], [0,2,0], [0,2,0], [0,0,2], [1,1,0]  -> argmax labels
    assert tree.soft_labels.tolist() == [[2, 0, 0], [1, 1, 0], [0, 2, 0], [0, 2, 0], [0, 0, 2], [1, 1, 0]]
    assert tree.labels.tolist() == [0, 0, 1, 1, 2, 0]
    info = {d["name"]: d for d in result["meta"]["data"]["datasets"]}
    assert info["soft/treeversity1"]["singleton_queries"] == 1  # class 2 has one image
    assert info["folder/mine"]["singleton_queries"] == 0
    assert "soft/treeversity1" in ur.data.list_datasets()


def _nn_correct(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return labels[sim.argmax(axis=1)] == labels


def _plain_bootstrap(unc, positives, seed_key, n):
    rng = np.random.default_rng(seed_key)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(unc), size=len(unc))
        values.append(roc_auc_score(positives[idx], unc[idx]) if 0 < positives[idx].sum() < len(idx) else np.nan)
    values = np.array(values)
    return np.percentile(values[~np.isnan(values)], [2.5, 97.5])


@pytest.mark.slow
def test_bootstrap_intervals_match_plain_numpy_and_controls(cli_run, own_data):
    _, out, result = cli_run
    boot = result["bootstrap"]
    assert boot["n_resamples"] == 200 and boot["confidence"] == 0.95
    assert set(result["controls"]) == {"random", "sharpness"}
    mine = benchmark.load_npz(out / "embeddings" / "folder_mine.npz")
    correct = _nn_correct(mine.embeddings.astype(np.float64), mine.labels)
    key = [0, zlib.crc32(b"folder/mine"), zlib.crc32(b"bootstrap")]
    for row, method in enumerate(mine.methods):
        expected = _plain_bootstrap(mine.uncertainties[row].astype(np.float64), ~correct, key, 200)
        assert boot["intervals"][method]["folder/mine_auroc_correct"] == pytest.approx(expected, abs=1e-12)
        point = result["metrics"][method]["folder/mine_auroc_correct"]
        assert point == pytest.approx(roc_auc_score(~correct, mine.uncertainties[row]), abs=1e-12)
    rng = np.random.default_rng(key)
    r1 = [correct[rng.integers(0, len(correct), size=len(correct))].mean() for _ in range(200)]
    assert boot["intervals"]["random"]["folder/mine_r1"] == pytest.approx(np.percentile(r1, [2.5, 97.5]), abs=1e-12)
    # paired differences between the methods and against the controls, on the same resamples
    diff = boot["differences"]["class-entropy - embed-norm"]["folder/mine_auroc_correct"]
    a = result["metrics"]["class-entropy"]["folder/mine_auroc_correct"]
    b = result["metrics"]["embed-norm"]["folder/mine_auroc_correct"]
    assert diff["difference"] == pytest.approx(a - b, abs=1e-12) and diff["low"] <= diff["high"]
    assert "embed-norm - sharpness" in boot["differences"] and "random - sharpness" not in boot["differences"]
    # the sharpness control = -var(Laplacian of the grey model input), blurred copies more uncertain
    model = own_data[2]
    transform = ur.data.eval_transform(model)
    path = mine.sample_ids[0]
    x = transform(Image.open(path).convert("RGB")).double().numpy()
    grey = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    assert mine.sharpness[0] == pytest.approx(-scipy.ndimage.laplace(grey)[1:-1, 1:-1].var(), rel=1e-6)
    assert result["controls"]["sharpness"]["folder/mine_avg_unc"] == pytest.approx(mine.sharpness.mean(), rel=1e-6)
    by_stem = {Path(p).stem: value for p, value in zip(mine.sample_ids, mine.sharpness)}
    for i in range(len(SAMPLES)):
        assert by_stem[f"{i}_blur"] > by_stem[str(i)]


@pytest.mark.slow
def test_report_files_show_intervals_controls_and_recompute(cli_run):
    done, out, result = cli_run
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert [(r["method"], r["kind"]) for r in rows] == [
        ("class-entropy", "method"), ("embed-norm", "method"), ("random", "control"), ("sharpness", "control")]
    low, high = result["bootstrap"]["intervals"]["embed-norm"]["avg_downstream_r1"]
    assert float(rows[1]["avg_downstream_r1_low"]) == low and float(rows[1]["avg_downstream_r1_high"]) == high
    report = (out / "report.md").read_text()
    assert "| sharpness (control) |" in report and "Paired differences" in report
    assert "soft/treeversity1 (test split, 6 images, 1 singleton queries)" in report
    assert "| random (control)" in done.stdout and f"[{low:.4f}, {high:.4f}]" in done.stdout
    again = benchmark.recompute(out / "embeddings")
    assert again["metrics"] == result["metrics"] and again["controls"] == result["controls"]
    assert again["bootstrap"] == result["bootstrap"]


@pytest.mark.slow
def test_cli_errors_for_class_map_and_split(own_data, capsys):
    root, ckpt, _ = own_data
    base = ["benchmark", "--model", str(ckpt), "--data-dir", str(root), "--num-workers", "0"]
    assert main([*base, "--datasets", "soft/treeversity1", "--class-map", "x.txt"]) == 2
    assert "no folder/ dataset to apply it to" in capsys.readouterr().err
    assert main([*base, "--datasets", "folder/mine:validation", "--class-map", str(root / "missing.txt")]) == 2
    assert "class_map file not found" in capsys.readouterr().err
    assert main([*base, "--datasets", "folder/mine:nosuchsplit"]) == 2
    assert "split for folder/mine must be one of" in capsys.readouterr().err


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_mode_and_log_lines():
    assert progress_mode(None, stream=_Stream(True)) == "bar" and progress_mode(None, stream=_Stream(False)) == "log"
    assert progress_mode(True, rank=1, stream=_Stream(False)) == "off" and progress_mode(False) == "off"
    with pytest.raises(ValueError, match="progress must be"):
        progress_mode("loud")
    stream = _Stream(False)
    batches = [{"index": list(range(i, min(i + 4, 10)))} for i in range(0, 10, 4)]
    assert list(track(batches, total=10, description="d", mode="log", every_s=3600, stream=stream)) == batches
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["d: 4/10 images", "d: 10/10 images"]
    stream = _Stream(False)
    list(track(batches, total=10, description="d", mode="log", every_s=0, stream=stream))
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == ["d: 4/10 images", "d: 8/10 images", "d: 10/10 images"]


def test_progress_bar_on_a_terminal():
    pytest.importorskip("tqdm")
    stream = _Stream(True)
    batches = [{"index": list(range(i, min(i + 4, 10)))} for i in range(0, 10, 4)]
    assert list(track(batches, total=10, description="d", mode="bar", stream=stream)) == batches
    assert "/10 [" in stream.getvalue() and "img/s" in stream.getvalue()  # tqdm's bar over images


def test_dataset_spec_and_option_errors():
    from uncertain_repr.benchmark.runner import parse_spec

    assert parse_spec("repr/cub:validation", "test") == ("repr/cub", "validation")
    assert parse_spec("repr/cub", "test") == ("repr/cub", "test")
    with pytest.raises(ValueError, match="name:split"):
        parse_spec("repr/cub:", "test")
    from .test_benchmark import datasets, tiny_model

    with pytest.raises(ValueError, match="dataset_options names datasets that are not opened by name"):
        benchmark.run(tiny_model(), datasets(), dataset_options={"a": {"class_map": "x"}}, progress=False)
    with pytest.raises(ValueError, match="bootstrap must be an int >= 0"):
        benchmark.run(tiny_model(), datasets(), bootstrap=-1, progress=False)
