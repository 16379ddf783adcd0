"""Shared fixtures: the real-data folder and the CI rule for missing data."""

from __future__ import annotations

import os
from pathlib import Path

# Before huggingface_hub is imported anywhere: no test reaches the network.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    return Path(os.environ.get("UNCERTAIN_REPR_DATA", REPO_ROOT.parent / "shared" / "data"))


def require_data(*parts: str) -> Path:
    """Path of a real-data file or folder under ``../shared/data``.

    Missing data skips the test locally but FAILS under ``CI=true``: in CI the data is always
    there, and a silently skipped real-data test verifies nothing.
    """
    path = _shared_data_dir().joinpath(*parts)
    if not path.exists():
        message = f"real data not found: {path} (set UNCERTAIN_REPR_DATA to override)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data():
    """The ``require_data`` helper as a fixture: ``shared_data("cifar10h", "cifar10h-counts.npy")``."""
    return require_data


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same RNG state."""
    torch.manual_seed(0)
