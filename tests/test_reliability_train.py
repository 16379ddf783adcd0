"""Faults while training lose nothing and are never reported as success (docs/reliability.md).

Real processes killed with SIGKILL at injected points (inside a checkpoint write, right after the
last ``resume.pt``), two real processes writing one output folder, damaged resume files.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import uncertain_repr as ur
from uncertain_repr.cache import CachedEmbeddings, build
from uncertain_repr.cli import main
from uncertain_repr.train import TrainConfig, fit

from ._train_helpers import one_thread, SyntheticImages, tiny_model  # noqa: F401 (autouse fixture)
from .conftest import REPO_ROOT

CONFIG = dict(epochs=3, batch_size=8, accumulation_steps=1, lr=3e-3, warmup_epochs=0, workers=0, device="cpu",
              amp=False)

# A child run: fit(init, cache) into OUT; FAULT says where it stops:
#   pause          after epoch 0, write MARKER and wait for RELEASE (it holds the folder meanwhile)
#   kill-in-write  SIGKILL half-way through writing checkpoint-1 (its weight files, no config yet)
#   kill-after-last SIGKILL right after the last epoch's resume.pt, before summary.csv and the links
RUN = """
import os, signal, sys, time, pathlib, torch
import uncertain_repr as ur
from uncertain_repr import hub
from uncertain_repr.cache import CachedEmbeddings
from uncertain_repr.train import TrainConfig, fit, loop
from tests.test_reliability_train import CONFIG
torch.set_num_threads(1)
init, cache, out, fault, marker, release = sys.argv[1:7]
if fault == "kill-in-write":
    write, calls = hub.write_safetensors, []
    def killing_write(module, path):
        digest = write(module, path)
        calls.append(path)
        if len(calls) == 4:  # epoch 1: backbone and head written, config.json not yet
            os.kill(os.getpid(), signal.SIGKILL)
        return digest
    hub.write_safetensors = killing_write
if fault == "kill-after-last":
    record = loop._record_epoch
    def killing_record(output, result, epoch):
        if epoch == CONFIG["epochs"] - 1:
            os.kill(os.getpid(), signal.SIGKILL)
        record(output, result, epoch)
    loop._record_epoch = killing_record
def pause(epoch, row):
    if fault == "pause" and epoch == 0:
        pathlib.Path(marker).write_text("holding")
        while not pathlib.Path(release).exists():
            time.sleep(0.02)
data = CachedEmbeddings(cache)
fit(ur.load_model(init), data, TrainConfig(**CONFIG), val_set=data, output_dir=out, on_epoch_end=pause)
print("trained")
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(folder with the initial model, cache path, the uninterrupted run's output folder)."""
    root = tmp_path_factory.mktemp("run")
    model = tiny_model()
    model.save_pretrained(root / "init")
    cache = build(model.eval(), SyntheticImages(32), root / "train.h5", epochs=2, batch_size=32)
    data = CachedEmbeddings(cache)
    fit(ur.load_model(root / "init"), data, TrainConfig(**CONFIG), val_set=data, output_dir=root / "straight")
    return root / "init", cache, root / "straight"


def child(setup, out, fault, marker="-", release="-"):
    init, cache, _ = setup
    return subprocess.Popen(
        [sys.executable, "-c", RUN, str(init), str(cache), str(out), fault, str(marker), str(release)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
    )


def summary(folder: Path):
    with open(folder / "summary.csv") as f:
        return list(csv.DictReader(f))


def assert_same_run(folder: Path, straight: Path) -> None:
    """The same summary rows, links and weights as the uninterrupted run, and nothing left over."""
    assert summary(folder) == summary(straight)
    for link in ("last", "best"):
        assert os.readlink(folder / link) == os.readlink(straight / link)
        got, ref = ur.load_model(folder / link).method.state_dict(), ur.load_model(straight / link).method.state_dict()
        for key, value in ref.items():
            assert torch.equal(got[key], value), (link, key)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in straight.iterdir())


def resume(setup, out):
    init, cache, _ = setup
    data = CachedEmbeddings(cache)
    return fit(ur.load_model(init), data, TrainConfig(**CONFIG, resume=True), val_set=data, output_dir=out)


# ------------------------------------------------------------------------- 2. two runs, one --output
@pytest.mark.slow
def test_second_run_into_the_same_output_is_refused(setup, tmp_path, capfd):
    init, cache, straight = setup
    out, marker, release = tmp_path / "out", tmp_path / "marker", tmp_path / "release"
    first = child(setup, out, "pause", marker, release)
    try:
        deadline = time.monotonic() + 240  # a bound on a loaded machine, not a timing assertion
        while not marker.exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "uncertain_repr.cli", "train", "--initial-checkpoint", str(init),
             "--dataset", f"hdf5/{cache}", "--epochs", "3", "-b", "8", "--accumulation_steps", "1",
             "--warmup-epochs", "0", "-j", "0", "--device", "cpu", "--amp", "false", "--output", str(out)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
        )
        assert second.returncode == 2
        assert f"error: another process is writing the training output {out}" in second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    finally:
        release.write_text("go")
        stdout, stderr = first.communicate(timeout=240)
    assert first.returncode == 0 and "trained" in stdout, stderr[-3000:]
    assert_same_run(out, straight)


# ------------------------------------------------------------------------- 5. killed, then resumed
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill-in-write", "kill-after-last"])
def test_a_run_killed_at_a_bad_moment_resumes_to_the_same_run(setup, tmp_path, fault):
    out = tmp_path / "out"
    killed = child(setup, out, fault)
    killed.communicate(timeout=240)
    assert killed.returncode == -9
    if fault == "kill-in-write":  # what a killed checkpoint write leaves behind
        assert [p.name for p in out.glob(".checkpoint-1.*.tmp")]
    else:  # resume.pt of the last epoch is there, the bookkeeping is not
        assert len(summary(out)) == CONFIG["epochs"] - 1
        assert os.readlink(out / "last") == f"checkpoint-{CONFIG['epochs'] - 2}"
    result = resume(setup, out)
    assert [row["epoch"] for row in result.history] == list(range(CONFIG["epochs"]))
    assert_same_run(out, setup[2])


def test_resume_with_nothing_left_to_train_finishes_the_bookkeeping(setup, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(setup[2], out, symlinks=True)
    (out / "summary.csv").unlink()
    (out / "last").unlink()
    (out / ".checkpoint-7.abc123.tmp").mkdir()  # a leftover of a killed write
    resume(setup, out)
    assert_same_run(out, setup[2])


# ------------------------------------------------------------------------- 7. damaged resume.pt
@pytest.mark.parametrize("damage, message", [("empty", "is empty"), ("truncated", "is truncated")])
def test_damaged_resume_file_is_a_clear_error(setup, tmp_path, capsys, damage, message):
    import shutil

    init, cache, straight = setup
    out = tmp_path / "out"
    shutil.copytree(straight, out, symlinks=True)
    data = (out / "resume.pt").read_bytes()
    (out / "resume.pt").write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"resume file {out / 'resume.pt'} {message}"):
        resume(setup, out)
    args = ["train", "--initial-checkpoint", str(init), "--dataset", f"hdf5/{cache}", "--epochs", "3", "-b", "8",
            "-j", "0", "--device", "cpu", "--output", str(out), "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"resume file {out / 'resume.pt'} {message}" in err and len(err.strip().splitlines()) == 1


def test_output_that_is_a_file_is_a_clear_error(setup, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(ValueError, match="is an existing file"):
        fit(ur.load_model(setup[0]), CachedEmbeddings(setup[1]), TrainConfig(**CONFIG), output_dir=tmp_path / "out")
