"""The idx reader: Fashion-MNIST from Debian's files, checked against an independent decode."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import uncertain_repr.data as urd
from uncertain_repr.data.idx import read_idx

FASHION = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fixture_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (5, 28, 28)), np.array([3, 1, 4, 1, 5])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    ds = urd.create_dataset("idx/fashion_mnist", tmp_path, "test")
    assert len(ds) == 5 and ds.labels.tolist() == [3, 1, 4, 1, 5] and ds.num_classes == 10
    item = ds[2]
    assert item["label"] == 4 and item["index"] == 2
    rgb = np.asarray(item["image"])
    assert rgb.shape == (28, 28, 3) and (rgb == images[2][..., None]).all()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        urd.create_dataset("idx/fashion_mnist", tmp_path, "train")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 1, 10, 1, 5]))  # was: an error naming no file
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: labels must be class indices in \[0, 10\), got 10$"):
        urd.create_dataset("idx/fashion_mnist", tmp_path, "test")
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="header says \\(10,\\), file holds 3 values"):
        read_idx(tmp_path / "bad.gz")



def test_corrupt_files_are_value_errors_naming_the_file(tmp_path):
    # These used to escape as EOFError / BadGzipFile / numpy's "offset must be non-negative ..." without the path.
    full = gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + bytes(range(10)))
    (tmp_path / "cut.gz").write_bytes(full[:-6])  # the gzip stream ends early
    with pytest.raises(ValueError, match=r"cut\.gz: truncated or corrupt gzip file"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "plain.gz").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 1) + b"\x07")  # not gzipped at all
    with pytest.raises(ValueError, match=r"plain\.gz: truncated or corrupt gzip file"):
        read_idx(tmp_path / "plain.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:  # 3 dimensions announced, 1.5 sizes present
        f.write(struct.pack(">BBBB", 0, 0, 8, 3) + b"\x00\x00\x00\x05\x00\x00")
    with pytest.raises(ValueError, match=r"short\.gz: header announces 3 dimensions .* holds 10 bytes"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "ok").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 2) + b"\x07\x09")  # uncompressed is fine
    assert read_idx(tmp_path / "ok").tolist() == [7, 9]

def test_real_fashion_mnist():
    if not (FASHION / "t10k-images-idx3-ubyte.gz").is_file():
        message = f"Fashion-MNIST not found in {FASHION} (apt-get install dataset-fashion-mnist)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    ds = urd.create_dataset("idx/fashion_mnist", FASHION, "test")
    assert len(ds) == 10_000
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
    assert ds.labels.numpy().tolist() == labels.tolist()
    assert np.bincount(labels).tolist() == [1000] * 10
