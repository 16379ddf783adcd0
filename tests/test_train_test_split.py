"""``--test_split`` while training: the test sets are evaluated every epoch beside validation, and
``best_test_*`` / ``best_furthertest_*`` hold the numbers of the epoch the validation metric chose
(url-spec §3.7), also after a killed run is resumed.

The evaluation is replaced by fixed per-epoch numbers, so the best validation epoch is known (and is
not the last one); the training itself is real (a tiny model on synthetic images).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch.utils.data import Dataset

from uncertain_repr.train import TrainConfig, fit, loop
from uncertain_repr.train.checkpoint import load_resume
from uncertain_repr.train.sampler import GlobalOrderSampler

from ._train_helpers import SyntheticImages, tiny_model
from .conftest import REPO_ROOT

CONFIG = dict(epochs=4, batch_size=8, accumulation_steps=1, lr=3e-3, warmup_epochs=0, workers=0, device="cpu",
              amp=False)
# auroc_correct per epoch of each set: validation peaks at epoch 1 of 4
VALUES = {
    "val": [0.50, 0.90, 0.70, 0.60],
    "test": [0.10, 0.20, 0.30, 0.40],
    "further": [0.11, 0.22, 0.33, 0.44],
}
BEST = max(range(CONFIG["epochs"]), key=lambda e: VALUES["val"][e])  # by hand: 1, not the last epoch


class Tagged(Dataset):
    """A stand-in evaluation set; the faked evaluation reads only its tag."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __len__(self) -> int:
        return 1


def install_fakes(set_attr: Callable[[object, str, object], None] = setattr) -> None:
    """Make ``loop.evaluate`` return ``VALUES[tag][current epoch]`` (the epoch from the sampler)."""
    current = {}
    set_epoch = GlobalOrderSampler.set_epoch

    def tracking_set_epoch(self, epoch):
        current["epoch"] = epoch
        return set_epoch(self, epoch)

    def fake_evaluate(model, dataset, **kwargs):
        value = VALUES[dataset.tag][current["epoch"]]
        return {"auroc_correct": value, "r1": 1.0 - value}

    set_attr(GlobalOrderSampler, "set_epoch", tracking_set_epoch)
    set_attr(loop, "evaluate", fake_evaluate)


def train(out: Path, **overrides):
    return fit(tiny_model(), SyntheticImages(16), TrainConfig(**CONFIG, **overrides),
               downstream_sets={"cub": Tagged("val")}, test_sets={"cub": Tagged("test")},
               further_test_sets={"benthic": Tagged("further")}, output_dir=out)


def rows(folder: Path):
    with open(folder / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def fakes(monkeypatch):
    install_fakes(monkeypatch.setattr)


def test_best_test_keys_are_the_best_validation_epochs_test_numbers(fakes, tmp_path):
    assert BEST == 1 != CONFIG["epochs"] - 1
    result = train(tmp_path)
    assert result.best_epoch == BEST
    for epoch, row in enumerate(result.history):  # test sets evaluated every epoch, best so far carried
        best = max(range(epoch + 1), key=lambda e: VALUES["val"][e])
        assert row["test_cub_auroc_correct"] == row["test_avg_downstream_auroc_correct"] == VALUES["test"][epoch]
        assert row["furthertest_avg_downstream_auroc_correct"] == VALUES["further"][epoch]
        assert row["best_eval_avg_downstream_auroc_correct"] == VALUES["val"][best]
        assert row["best_test_avg_downstream_auroc_correct"] == VALUES["test"][best]
        assert row["best_test_cub_r1"] == 1.0 - VALUES["test"][best]
        assert row["best_furthertest_benthic_auroc_correct"] == VALUES["further"][best]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == result.history[-1]
    assert results["best_test_avg_downstream_auroc_correct"] == VALUES["test"][BEST] == 0.20
    assert results["test_avg_downstream_auroc_correct"] == VALUES["test"][-1] == 0.40  # the final model's
    assert results["best_furthertest_avg_downstream_r1"] == 1.0 - VALUES["further"][BEST]
    last = rows(tmp_path)[-1]
    assert float(last["best_test_avg_downstream_auroc_correct"]) == 0.20
    assert float(last["best_eval_avg_downstream_auroc_correct"]) == 0.90


class Interrupted(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_results(fakes, tmp_path):
    train(tmp_path / "straight")

    def stop(epoch, row):
        if epoch == BEST + 1:  # after the best epoch was saved, before the run ends
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(tiny_model(), SyntheticImages(16), TrainConfig(**CONFIG),
            downstream_sets={"cub": Tagged("val")}, test_sets={"cub": Tagged("test")},
            further_test_sets={"benthic": Tagged("further")}, output_dir=tmp_path / "killed", on_epoch_end=stop)
    assert len(rows(tmp_path / "killed")) == BEST + 2
    result = train(tmp_path / "killed", resume=True)
    assert result.best_epoch == BEST
    assert rows(tmp_path / "killed") == rows(tmp_path / "straight")
    for name in ("killed", "straight"):
        assert json.loads((tmp_path / name / "results.json").read_text())[
            "best_test_avg_downstream_auroc_correct"] == VALUES["test"][BEST]


# A child run with the fakes, SIGKILLed right after epoch KILL_AT's resume.pt (before summary.csv/results.json)
RUN = """
import os, signal, sys, pathlib, torch
from uncertain_repr.train import loop
from tests.test_train_test_split import install_fakes, train
torch.set_num_threads(1)
out, kill_at = pathlib.Path(sys.argv[1]), int(sys.argv[2])
install_fakes()
record = loop._record_epoch
def killing_record(output, result, epoch):
    if epoch == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    record(output, result, epoch)
loop._record_epoch = killing_record
train(out)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [BEST + 1, CONFIG["epochs"] - 1])
def test_killed_run_resumes_to_the_same_results_json_and_summary(fakes, tmp_path, kill_at):
    train(tmp_path / "straight")
    child = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "killed"), str(kill_at)], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    train(tmp_path / "killed", resume=True)
    assert rows(tmp_path / "killed") == rows(tmp_path / "straight")
    got, ref = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("killed", "straight"))
    assert got == ref and got["best_test_avg_downstream_auroc_correct"] == VALUES["test"][BEST]
    assert load_resume(tmp_path / "killed" / "resume.pt")["best_epoch"] == BEST


@pytest.mark.slow
def test_train_command_with_test_split_reports_the_best_epochs_test_numbers(tmp_path, capsys):
    """Real training from the command line: the test split is the validation split here, so the
    ``best_test_*`` numbers must equal the ``eval_*`` numbers of the epoch the validation metric chose."""
    from uncertain_repr.cli import main
    from uncertain_repr.train import launch

    from .conftest import require_data

    data = require_data("tiny_imagenet200").parent
    tiny_model().save_pretrained(tmp_path / "init")
    out = tmp_path / "run"
    argv = ["train", "--initial-checkpoint", str(tmp_path / "init"), "--dataset", "tar/tiny_imagenet200",
            "--data-dir", str(data), "--dataset_eval", "", "--dataset-downstream=[tar/tiny_imagenet200]",
            "--test_split=validation", "--epochs", "3", "--lr", "0.03", "--warmup-epochs", "0", "-b", "20",
            "--accumulation_steps", "1", "-j", "0", "--device", "cpu", "--amp", "false", "--output", str(out)]
    real_open = launch.open_dataset
    # 24 training images (classes within the 10-class head), 120 evaluation images (several classes)
    launch.open_dataset = lambda *a, **k: real_open(*a, **{**k, "max_samples": 24 if k.get("train") else 120})
    try:
        assert main(argv) == 0
    finally:
        launch.open_dataset = real_open
    history = [{k: float(v) for k, v in r.items() if v != ""} for r in rows(out)]
    metric = "eval_avg_downstream_auroc_correct"
    best = 0
    for epoch, row in enumerate(history):  # strictly greater, the first epoch always best (url-spec §3.7)
        if row[metric] > history[best][metric]:
            best = epoch
    results = json.loads((out / "results.json").read_text())
    assert results["best_eval_avg_downstream_auroc_correct"] == history[best][metric]
    for key in ("avg_downstream_auroc_correct", "avg_downstream_r1", "tar/tiny_imagenet200_auroc_correct"):
        assert results[f"best_test_{key}"] == pytest.approx(history[best][f"eval_{key}"], abs=1e-12)
        assert results[f"test_{key}"] == pytest.approx(history[-1][f"eval_{key}"], abs=1e-12)
        assert results[f"best_test_{key}"] == history[best][f"test_{key}"]
