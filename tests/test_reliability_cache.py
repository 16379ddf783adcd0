"""Faults while caching lose nothing and are never reported as success (docs/reliability.md).

Two real processes for concurrency, a real torchrun (gloo) for a rank that died, an injected
``OSError`` (and, where this machine lets the test mount one, a small tmpfs) for a full disk.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from uncertain_repr.cache import CachedEmbeddings, build
from uncertain_repr.train import TrainConfig, fit

from ._train_helpers import one_thread, SyntheticImages, tiny_model  # noqa: F401 (autouse fixture)
from .conftest import REPO_ROOT

# A child build: rows of SyntheticImages(16) x 2 epochs in chunks of 8. With a marker file it
# announces (after its first chunk) that it holds the lock, and waits for the release file.
BUILD = """
import sys, time, pathlib, torch
from uncertain_repr.cache import build
from tests._train_helpers import SyntheticImages, tiny_model
torch.set_num_threads(1)
out, marker, release = sys.argv[1], sys.argv[2], sys.argv[3]
def pause(rows):
    if marker != "-" and rows == 8:
        pathlib.Path(marker).write_text("holding")
        while not pathlib.Path(release).exists():
            time.sleep(0.02)
build(tiny_model().eval(), SyntheticImages(16), out, epochs=2, batch_size=4, chunk_size=8, on_chunk=pause)
print("built")
"""
KW = dict(epochs=2, batch_size=4, chunk_size=8)


@pytest.fixture(scope="module")
def model():
    return tiny_model().eval()


def columns(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f}


def assert_same_rows(path, reference):
    got, ref = columns(path), columns(reference)
    assert got.keys() == ref.keys()
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


def child(*args, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", BUILD, *map(str, args)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240  # a generous bound on a loaded machine, not a timing assertion
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(process.communicate()[1][-3000:])
        assert time.monotonic() < deadline, "the first build never reached its first chunk"
        time.sleep(0.05)


# ------------------------------------------------------------------------- 1. two builds, one -o
@pytest.mark.slow
@pytest.mark.parametrize("hdf5_locking", ["TRUE", "FALSE"])
def test_second_build_of_the_same_file_is_refused_and_the_first_one_is_intact(model, tmp_path, hdf5_locking):
    reference = build(model, SyntheticImages(16), tmp_path / "ref.h5", **KW)
    out, marker, release = tmp_path / "c.h5", tmp_path / "marker", tmp_path / "release"
    env = {"HDF5_USE_FILE_LOCKING": hdf5_locking}  # FALSE: as on many network file systems
    first = child(out, marker, release, env=env)
    try:
        wait_for(marker, first)
        partial = tmp_path / "c.h5.partial"
        size = partial.stat().st_size
        second = child(out, "-", "-", env=env)
        _, err = second.communicate(timeout=240)
        assert second.returncode != 0
        assert "another process is writing the embedding cache" in err and str(out) in err
        assert partial.stat().st_size == size  # the second build did not truncate the first one's file
    finally:
        release.write_text("go")
        stdout, stderr = first.communicate(timeout=240)
    assert first.returncode == 0 and "built" in stdout, stderr[-3000:]
    assert_same_rows(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c.h5")) == ["c.h5"]  # no lock left


def test_lock_file_of_a_killed_build_does_not_block(model, tmp_path):
    (tmp_path / "c.h5.lock").write_text("12345\n")  # left by a build killed with -9: no process holds it
    path = build(model, SyntheticImages(4), tmp_path / "c.h5")
    assert path.exists() and not (tmp_path / "c.h5.lock").exists()


# ------------------------------------------------------------------------- 3. distributed cache
RANK_BUILD = """
import sys, torch
from uncertain_repr.cache import build
from uncertain_repr.train import distributed as dist_utils
from tests._train_helpers import SyntheticImages, tiny_model
torch.set_num_threads(1)
dist_utils.init_from_env("cpu")
build(tiny_model().eval(), SyntheticImages(15), sys.argv[1], epochs=2, batch_size=4, chunk_size=4)
dist_utils.shutdown()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
def test_rerun_after_a_rank_died_resumes_and_two_ranks_train_like_one(model, tmp_path):
    one = build(model, SyntheticImages(15), tmp_path / "one.h5", epochs=2, batch_size=4, chunk_size=4)
    two = tmp_path / "two.h5"
    # first run: rank 0 finished its shard, rank 1 died in its second chunk
    build(model, SyntheticImages(15), two, epochs=2, batch_size=4, chunk_size=4, rank=0, world_size=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(model, SyntheticImages(15, fail_at=9), two, epochs=2, batch_size=4, chunk_size=4, rank=1, world_size=2)
    assert (tmp_path / "two.rank1-of-2.h5.partial").exists()
    # rerunning the same torchrun command: rank 0 has nothing to do, rank 1 resumes
    script = tmp_path / "rank_build.py"
    script.write_text(RANK_BUILD)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         str(script), str(two)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(tmp_path.glob("two*.partial*"))
    # the reader presents both caches in the same (epoch, index) order ...
    single, sharded = CachedEmbeddings(one), CachedEmbeddings(two)
    assert len(sharded.files) == 2 and len(single) == len(sharded) == 30
    keys = [(single[i]["epoch"], single[i]["index"]) for i in range(30)]
    assert keys == sorted(keys) == [(sharded[i]["epoch"], sharded[i]["index"]) for i in range(30)]
    for i in range(30):
        torch.testing.assert_close(sharded[i]["embedding"], single[i]["embedding"], rtol=1e-5, atol=1e-6)
    # ... so training on them gives the same head
    config = TrainConfig(epochs=2, batch_size=6, accumulation_steps=1, lr=3e-3, warmup_epochs=0, workers=0,
                         device="cpu", amp=False)
    heads = []
    for data in (single, sharded):
        trained = tiny_model()
        fit(trained, data, config)
        heads.append(trained.method.state_dict())
    for key, value in heads[0].items():
        torch.testing.assert_close(heads[1][key], value, rtol=1e-4, atol=1e-6)


def test_duplicate_rows_across_shards_are_refused(model, tmp_path):
    for rank in range(2):
        build(model, SyntheticImages(4), tmp_path / "c.h5", rank=rank, world_size=2)
    with h5py.File(tmp_path / "c.rank1-of-2.h5", "r+") as f:
        f["indices"][...] = 0  # rank 1's rows claim rank 0's sample indices
    with pytest.raises(ValueError, match="duplicate"):
        CachedEmbeddings(tmp_path / "c.h5")


# ------------------------------------------------------------------------- 4. full disk
def _fail_on_write(monkeypatch, at: int) -> None:
    """The ``at``-th HDF5 row write fails as on a full disk."""
    calls = {"n": 0}
    original = h5py.Dataset.__setitem__

    def setitem(self, key, value):
        calls["n"] += 1
        if calls["n"] == at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", setitem)


@pytest.mark.parametrize("at", [1, 2, 4])
def test_full_disk_is_one_clear_error_and_nothing_wrong_is_accepted_later(model, tmp_path, monkeypatch, at):
    reference = build(model, SyntheticImages(16), tmp_path / "ref.h5", **KW)
    target = tmp_path / "c.h5"
    _fail_on_write(monkeypatch, at)
    with pytest.raises(OSError, match=r"writing the embedding cache .*c\.h5\.partial failed: .*No space left") as err:
        build(model, SyntheticImages(16), target, **KW)
    assert err.value.errno == errno.ENOSPC
    # the unfinished file is gone (its space freed): no reader or resume can take its rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.h5"]
    monkeypatch.undo()
    assert_same_rows(build(model, SyntheticImages(16), target, **KW), reference)


TMPFS_BUILD = """
import errno, json, os, sys
import h5py, numpy as np, torch
from uncertain_repr import cache
from tests._train_helpers import SyntheticImages, tiny_model
torch.set_num_threads(1)
mount, reference, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model, results = tiny_model().eval(), []
kw = dict(epochs=4, batch_size=16, chunk_size=32)
cache.build(model, SyntheticImages(96), reference, **kw)

def fill(name, leave):
    stat = os.statvfs(mount)
    with open(os.path.join(mount, name), "wb") as f:
        try:
            f.write(b"x" * max(0, stat.f_bavail * stat.f_frsize - leave))
            f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC

for mode, leave in cases:
    fill("filler", leave)
    fill_up = (lambda rows: rows == 32 and fill("filler2", 0)) if mode == "fill-during" else None
    try:
        path = cache.build(model, SyntheticImages(96), os.path.join(mount, "c.h5"), on_chunk=fill_up, **kw)
        with h5py.File(path) as got, h5py.File(reference) as ref:
            same = all(np.array_equal(got[k][()], ref[k][()]) for k in ref)
        results.append(["built", same])
    except OSError as err:
        results.append(["error", str(err)])
    results.append(sorted(set(os.listdir(mount)) - {"filler", "filler2"}))
    for name in os.listdir(mount):
        os.remove(os.path.join(mount, name))
print(json.dumps(results))
"""


@pytest.mark.slow
def test_a_really_full_tmpfs_never_crashes_the_process(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root); the injected-OSError test covers it")
    # the cache file is ~120 KiB; free space left before each build, then one disk that fills up mid-build
    cases = [["fill-before", leave] for leave in (0, 4096, 20_000, 50_000, 90_000, 115_000, 125_000, 150_000)]
    cases += [["fill-during", 10**9]] * 3
    try:
        proc = subprocess.run(
            [sys.executable, "-c", TMPFS_BUILD, str(mount), str(tmp_path / "ref.h5"), json.dumps(cases)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert proc.returncode == 0, f"the process died (exit {proc.returncode})" + proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    outcomes, left = results[::2], results[1::2]
    for outcome in outcomes[:-3]:  # out of space: one clear error before anything is computed
        assert outcome[0] == "error" and "not enough free space for the embedding cache c.h5" in outcome[1], outcomes
    # a disk that fills up while the build runs does not hurt it: its space was reserved at the start
    assert outcomes[-3:] == [["built", True]] * 3
    assert left == [[]] * (len(cases) - 3) + [["c.h5"]] * 3  # nothing half-written stays behind


# ------------------------------------------------------------------------- 6./7. bad files are named
def test_labels_shorter_than_embeddings_is_an_error_naming_the_file(model, tmp_path):
    path = build(model, SyntheticImages(8), tmp_path / "c.h5")
    with h5py.File(path, "r+") as f:
        labels = f["labels"][:3]
        del f["labels"]
        f["labels"] = labels
    with pytest.raises(ValueError, match=rf"{path} is inconsistent: .*'labels': 3"):
        CachedEmbeddings(path)


def test_truncated_cache_is_an_error_naming_the_file(model, tmp_path):
    path = build(model, SyntheticImages(8), tmp_path / "c.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{path} is not a readable embedding cache \(truncated or corrupt\?\)"):
        CachedEmbeddings(path)
    with pytest.raises(ValueError, match=str(path)):  # rebuilding over it does not take it as finished
        build(model, SyntheticImages(8), path)


def test_training_on_an_eval_transform_cache_needs_the_override(tmp_path, capsys):
    from uncertain_repr.cli import main

    model = tiny_model()
    model.save_pretrained(tmp_path / "init")
    plain = SyntheticImages(16)
    items = [{"image": plain.images[i], "label": int(plain.labels[i]), "index": i} for i in range(16)]
    cache = build(model.eval(), items, tmp_path / "val.h5", augment=False)
    args = ["train", "--initial-checkpoint", str(tmp_path / "init"), "--dataset", f"hdf5/{cache}",
            "--epochs", "1", "-b", "8", "--accumulation_steps", "1", "--warmup-epochs", "0", "-j", "0",
            "--device", "cpu", "--amp", "false"]
    assert main(args) == 2  # refused, before anything is trained
    assert "cached with the evaluation transform" in capsys.readouterr().err
    assert main([*args, "--allow-eval-cache"]) == 0
