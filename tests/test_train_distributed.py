"""Two torchrun processes (gloo, CPU) train exactly like one process with the same global batch."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

import uncertain_repr as ur
from uncertain_repr.cache import build
from uncertain_repr.cli import main

from ._train_helpers import SyntheticImages, tiny_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary(folder):
    with open(folder / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("per_rank, loss_args", [
    (4, []),
    (4, ["--loss-args", '{"pairing": "all"}']),  # every pair of the global batch: pairs across the ranks
    (3, []),  # an odd per-rank batch: consecutive pair (2, 3) of the global batch spans the two ranks
])
def test_two_processes_equal_one_process_with_twice_the_batch(tmp_path, per_rank, loss_args):
    torch.set_num_threads(1)
    model = tiny_model()
    model.save_pretrained(tmp_path / "init")
    cache = build(model.eval(), SyntheticImages(48), tmp_path / "train.h5", epochs=2, batch_size=48)
    common = ["--initial-checkpoint", str(tmp_path / "init"), "--dataset", f"hdf5/{cache}",
              "--dataset_eval", f"hdf5/{cache}", "--epochs", "2", "--accumulation_steps", "2", "--lr", "3e-3",
              "--warmup-epochs", "0", "-j", "0", "--device", "cpu", "--unc_start_value", "0", *loss_args]
    assert main(["train", *common, "-b", str(2 * per_rank), "--output", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "uncertain_repr.train", *common, "-b", str(per_rank), "--output", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # rank 0 reports, rank 1 stays quiet
    one, two = summary(tmp_path / "one"), summary(tmp_path / "two")
    assert [r["epoch"] for r in one] == [r["epoch"] for r in two] == ["0", "1"]
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for key in a:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6), key
    head_one = ur.load_model(tmp_path / "one" / "last").method.state_dict()
    head_two = ur.load_model(tmp_path / "two" / "last").method.state_dict()
    for key, value in head_one.items():
        torch.testing.assert_close(head_two[key], value, rtol=1e-5, atol=1e-6)
    assert not torch.equal(head_one["net.0.weight"], model.method.net[0].weight)
