"""Documentation: every public name has a docstring, the README's quick start runs verbatim, and
the mkdocs site builds with --strict (a broken link or a malformed docstring fails)."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO_ROOT

PUBLIC_MODULES = [
    "uncertain_repr",
    "uncertain_repr.methods",
    "uncertain_repr.losses",
    "uncertain_repr.metrics",
    "uncertain_repr.data",
    "uncertain_repr.cache",
    "uncertain_repr.train",
    "uncertain_repr.benchmark",
]


def public_objects():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
                yield f"{module_name}.{name}", obj


def test_every_public_name_has_a_docstring():
    missing = [name for name, obj in public_objects() if not (inspect.getdoc(obj) or "").strip()]
    assert not missing, f"public names without a docstring: {missing}"
    # and the public methods of the public classes (an override may inherit its docstring)
    undocumented = [
        f"{name}.{attr}"
        for name, obj in public_objects()
        if inspect.isclass(obj) and obj.__module__.startswith("uncertain_repr")
        for attr, member in vars(obj).items()
        if not attr.startswith("_") and inspect.isfunction(member) and not (inspect.getdoc(getattr(obj, attr)) or "").strip()
    ]
    assert not undocumented, f"public methods without a docstring: {undocumented}"


def readme_quick_start() -> str:
    """The first python block after the README's "## Quick start" heading."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_quick_start_runs_verbatim():
    result = subprocess.run([sys.executable, "-c", readme_quick_start()], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "torch.Size([2, 192]) torch.Size([2])" in result.stdout


@pytest.mark.slow
def test_mkdocs_site_builds_strict(tmp_path):
    if shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install 'uncertain-repr[docs]')")
    result = build_site(REPO_ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("WARNING")]
    assert not warnings, "\n".join(warnings)
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def build_site(root, site) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``root`` into ``site``. Not with ``-q``: quiet mode drops the warnings, and
    with them the strict-mode failure (a broken link then builds with exit status 0)."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))  # for the API page
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        capture_output=True, text=True, cwd=root, env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": path},
    )


@pytest.mark.slow
def test_mkdocs_build_fails_on_a_broken_link(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install 'uncertain-repr[docs]')")
    copy = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "docs", copy / "docs")
    shutil.copy(REPO_ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    with open(copy / "docs" / "index.md", "a") as page:
        page.write("\nSee [the script](../examples/run_benchmark.py).\n")  # the link that once slipped through
    result = build_site(copy, tmp_path / "site")
    assert result.returncode != 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "'index.md' contains a link '../examples/run_benchmark.py'" in warnings[0], warnings
