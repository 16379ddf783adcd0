"""The CLI reports every fault in one line with a non-zero status, never a traceback (docs/reliability.md)."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from uncertain_repr import cli
from uncertain_repr.commands import cache as cache_command
from uncertain_repr.commands import train as train_command

from .conftest import REPO_ROOT

CACHE = ["cache", "--model", "test_vit", "--pretrained", "false", "--dataset", "x", "--data-dir", "x", "-o", "c.h5"]


@pytest.mark.parametrize("error, shown", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
    (EOFError(), "EOFError:  (a file ended early: truncated?)"),
    (KeyError("architecture"), "KeyError: 'architecture'"),
])
def test_user_errors_are_one_line_with_status_2(monkeypatch, capsys, error, shown):
    def fail(args):
        raise error

    monkeypatch.setattr(cache_command, "run", fail)
    assert cli.main(CACHE) == cli.EXIT_ERROR == 2
    err = capsys.readouterr().err
    assert err.startswith("uncertain-repr cache: error: ") and shown in err and err.count("\n") == 1


@pytest.mark.parametrize("command, argv, hint", [
    (cache_command, CACHE, "rerun the same command to resume"),
    (train_command, ["train"], "rerun the same command with --resume to continue"),
    (train_command, ["train", "--resume"], "rerun the same command to resume"),
])
def test_ctrl_c_says_how_to_resume(monkeypatch, capsys, command, argv, hint):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "run", interrupted)
    assert cli.main(argv) == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == f"uncertain-repr {argv[0]}: interrupted; {hint}\n"


def test_output_below_an_existing_file_is_one_line(tmp_path):
    from PIL import Image

    (tmp_path / "images" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a" / "0.png")
    (tmp_path / "file").write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "uncertain_repr.cli", "cache", "--model", "test_vit", "--pretrained", "false",
         "--dataset", "folder/images", "--data-dir", str(tmp_path), "--split", "all", "-j", "0",
         "-o", str(tmp_path / "file" / "c.h5")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("uncertain-repr cache: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert str(tmp_path / "file") in proc.stderr


def test_python_m_train_goes_through_the_cli_error_handler(monkeypatch, capsys):
    from uncertain_repr.train import launch

    calls = []
    shared = cli.run_command
    monkeypatch.setattr(cli, "run_command", lambda *a, **k: calls.append(a[0]) or shared(*a, **k))
    model = ["--model", "test_vit", "--pretrained", "false"]
    assert launch.main([*model, "--batch-size", "0"]) == cli.EXIT_ERROR == 2 and calls == ["train"]
    assert capsys.readouterr().err == "uncertain-repr train: error: batch_size must be >= 1, got 0\n"

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "run", interrupted)
    assert launch.main(model) == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "uncertain-repr train: interrupted; rerun the same command with --resume to continue\n"
    assert launch.main([*model, "--resume"]) == 130
    assert capsys.readouterr().err == "uncertain-repr train: interrupted; rerun the same command to resume\n"


def test_python_m_train_user_error_is_one_line(tmp_path):
    proc = subprocess.run(  # what torchrun runs on every rank
        [sys.executable, "-m", "uncertain_repr.train", "--model", "test_vit", "--pretrained", "false",
         "--dataset", "folder/x", "--data-dir", str(tmp_path / "missing"), "--output", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"uncertain-repr train: error: --data-dir {tmp_path / 'missing'}: data folder not found "
                           "(needed by --dataset folder/x)\n")
