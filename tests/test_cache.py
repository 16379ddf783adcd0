"""The HDF5 embedding cache: contents, determinism, crash-resume, shards, manifest checks."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from uncertain_repr import cache
from uncertain_repr.cache import CachedEmbeddings, build, check_compatible

from ._train_helpers import one_thread, SyntheticImages, tiny_model  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def model():
    return tiny_model().eval()


def read(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f}, json.loads(f.attrs["manifest"])


def test_rows_hold_embeddings_labels_indices_epochs(model, tmp_path):
    data = SyntheticImages(12, soft=True)
    path = build(model, data, tmp_path / "c.h5", epochs=2, batch_size=5, chunk_size=10, seed=3)
    cols, manifest = read(path)
    assert cols["embeddings"].shape == (24, 64) and cols["embeddings"].dtype == np.float32
    assert cols["labels"].dtype == np.int64 and cols["indices"].dtype == np.int64
    np.testing.assert_array_equal(cols["indices"], np.tile(np.arange(12), 2))
    np.testing.assert_array_equal(cols["epochs"], np.repeat([0, 1], 12))
    np.testing.assert_array_equal(cols["labels"], np.tile(data.labels.numpy(), 2))
    np.testing.assert_array_equal(cols["soft_labels"][:12], data.soft.numpy())
    # the two epochs are different augmented views
    assert not np.allclose(cols["embeddings"][:12], cols["embeddings"][12:])
    assert manifest["backbone"] == "test_vit" and manifest["dataset"] == "synthetic"
    assert manifest["backbone_sha256"] == cache.backbone_fingerprint(model)
    assert manifest["transform"] == repr(data.transform) and manifest["dataset_length"] == 12
    assert not list(tmp_path.glob("*.partial*"))


def test_without_augment_rows_equal_a_direct_forward(model, tmp_path):
    data = SyntheticImages(6)
    plain = [{"image": data.images[i], "label": int(data.labels[i]), "index": i} for i in range(6)]
    path = build(model, plain, tmp_path / "c.h5", augment=False, batch_size=4)
    with torch.no_grad():
        expected = model.forward_embedding(data.images)
    np.testing.assert_allclose(read(path)[0]["embeddings"], expected.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="identical copies"):
        build(model, plain, tmp_path / "d.h5", augment=False, epochs=2)


def test_rows_do_not_depend_on_batch_size_or_caller_rng(model, tmp_path):
    a = build(model, SyntheticImages(10), tmp_path / "a.h5", epochs=2, batch_size=4, seed=1)
    torch.manual_seed(999)
    state = torch.get_rng_state()
    b = build(model, SyntheticImages(10), tmp_path / "b.h5", epochs=2, batch_size=7, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    np.testing.assert_allclose(read(a)[0]["embeddings"], read(b)[0]["embeddings"], rtol=1e-5, atol=1e-6)
    c = build(model, SyntheticImages(10), tmp_path / "c.h5", epochs=2, batch_size=4, seed=2)
    assert not np.allclose(read(a)[0]["embeddings"], read(c)[0]["embeddings"])


def test_resume_after_crash_equals_uninterrupted_build(model, tmp_path):
    reference = build(model, SyntheticImages(16), tmp_path / "ref.h5", epochs=2, batch_size=4, chunk_size=8)
    target = tmp_path / "run.h5"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(model, SyntheticImages(16, fail_at=13), target, epochs=2, batch_size=4, chunk_size=8)
    partial = tmp_path / "run.h5.partial"
    assert partial.exists() and not target.exists()  # a reader never sees a half-written file
    assert json.loads((tmp_path / "run.h5.partial.progress.json").read_text()) == {"rows": 8}

    chunks = []

    def crash_after_second_chunk(rows):
        chunks.append(rows)
        if rows == 24:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(model, SyntheticImages(16), target, epochs=2, batch_size=4, chunk_size=8, on_chunk=crash_after_second_chunk)
    assert chunks == [16, 24]  # resumed after row 8, not from scratch
    build(model, SyntheticImages(16), target, epochs=2, batch_size=4, chunk_size=8)
    got, ref = read(target), read(reference)
    assert got[0].keys() == ref[0].keys()
    for name in ref[0]:
        np.testing.assert_array_equal(got[0][name], ref[0][name])
    # 32 rows: traced, and so is the resumed part of 8 rows (the choice counts all rows, not those left)
    assert got[1]["backbone_runtime"] == ref[1]["backbone_runtime"] == "channels_last+jit_freeze+onednn"
    assert not partial.exists() and not (tmp_path / "run.h5.partial.progress.json").exists()
    assert build(model, SyntheticImages(16), target, epochs=2, batch_size=4, chunk_size=8) == target  # no-op
    with pytest.raises(FileExistsError, match="other settings"):
        build(model, SyntheticImages(16), target, epochs=3)


def test_unfinished_file_with_other_settings_is_not_silently_mixed(model, tmp_path):
    with pytest.raises(RuntimeError):
        build(model, SyntheticImages(8, fail_at=6), tmp_path / "c.h5", batch_size=2, chunk_size=2)
    with pytest.raises(ValueError, match="seed: cache has 0, expected 5"):
        build(model, SyntheticImages(8), tmp_path / "c.h5", batch_size=2, chunk_size=2, seed=5)


def test_shards_read_as_one_dataset_equal_to_a_single_build(model, tmp_path):
    single = CachedEmbeddings(build(model, SyntheticImages(9), tmp_path / "one.h5", epochs=2, batch_size=4))
    for rank in range(2):
        written = build(model, SyntheticImages(9), tmp_path / "two.h5", epochs=2, batch_size=4, rank=rank, world_size=2)
        assert written.name == f"two.rank{rank}-of-2.h5"
    sharded = CachedEmbeddings(tmp_path / "two.h5")
    assert len(sharded) == len(single) == 18
    by_key = {(it["epoch"], it["index"]): it for it in (single[i] for i in range(18))}
    items = sharded.__getitems__(list(range(18))[::-1])  # the batched path, in any order
    assert sorted((it["epoch"], it["index"]) for it in items) == sorted(by_key)
    for item in items:
        ref = by_key[(item["epoch"], item["index"])]
        assert item["label"] == ref["label"]
        torch.testing.assert_close(item["embedding"], ref["embedding"], rtol=1e-5, atol=1e-6)
    (tmp_path / "two.rank1-of-2.h5").unlink()
    with pytest.raises(ValueError, match=r"ranks \[1\] of 2 are missing"):
        CachedEmbeddings(tmp_path / "two.h5")


def test_a_single_file_next_to_shards_of_the_same_name_is_refused_not_read_stale(model, tmp_path):
    old = build(model, SyntheticImages(6), tmp_path / "c.h5", batch_size=3, seed=0)  # an earlier 1-process build
    for rank in range(2):  # the current build, with another seed, by 2 processes
        build(model, SyntheticImages(6), tmp_path / "c.h5", batch_size=3, seed=7, rank=rank, world_size=2)
    with pytest.raises(ValueError, match=r"c.h5 and rank shards \['c.rank0-of-2.h5', 'c.rank1-of-2.h5'\] .* both exist"):
        CachedEmbeddings(old)  # was: the old file's rows (seed 0), silently
    old.unlink()
    assert CachedEmbeddings(tmp_path / "c.h5").manifest["seed"] == 7


def test_reader_items_loader_laziness_and_memory_mode(model, tmp_path):
    path = build(model, SyntheticImages(6, soft=True), tmp_path / "c.h5", epochs=2, dtype="float16")
    data = CachedEmbeddings(path, expect=model)
    assert data._handles == {}  # nothing opened before a fork
    item = data[7]
    assert set(item) == {"embedding", "label", "index", "epoch", "soft_labels"}
    assert item["embedding"].dtype == torch.float32 and item["index"] == 1 and item["epoch"] == 1
    clone = pickle.loads(pickle.dumps(data))
    assert clone._handles == {}
    torch.testing.assert_close(clone[7]["embedding"], item["embedding"])
    memory = CachedEmbeddings(path, in_memory=True)
    batch = next(iter(torch.utils.data.DataLoader(memory, batch_size=12)))
    assert batch["embedding"].shape == (12, 64) and batch["soft_labels"].shape == (12, 10)
    torch.testing.assert_close(batch["embedding"][7], item["embedding"])
    with pytest.raises(IndexError):
        data[12]


def test_manifest_mismatch_names_the_fields(model, tmp_path):
    path = build(model, SyntheticImages(4), tmp_path / "c.h5")
    other = tiny_model(seed=1)
    with pytest.raises(ValueError, match="backbone_sha256: cache has '[0-9a-f]{64}', expected"):
        CachedEmbeddings(path, expect=other)
    data = CachedEmbeddings(path)
    with pytest.raises(ValueError, match=r"transform: cache has .*RandomFlip\+Noise\(0.1\).*, expected .*Resize\(224\)"):
        check_compatible(data, model, transform="Resize(224)")
    check_compatible(data, model, transform=SyntheticImages.transform)  # same transform: fine
    with pytest.raises(FileNotFoundError, match="no embedding cache"):
        CachedEmbeddings(tmp_path / "missing.h5")


def test_import_uncertain_repr_stays_light():
    # (tqdm is not checked: ``import torch`` itself imports it, through torch.hub)
    code = ("import sys, uncertain_repr; bad = [m for m in ('h5py', 'uncertain_repr.cache', "
            "'uncertain_repr.train') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cache_command_on_real_images(shared_data, tmp_path):
    from uncertain_repr.cli import main

    root = shared_data("tiny_imagenet200").parent
    out = tmp_path / "val.h5"
    assert main(["cache", "--model", "test_vit", "--pretrained", "false", "--dataset", "tar/tiny_imagenet200",
                 "--data-dir", str(root), "--split", "validation", "--max-samples", "6", "-j", "0", "-b", "4",
                 "--output", str(out)]) == 0
    data = CachedEmbeddings(out)
    assert len(data) == 6 and data.manifest["augment"] is False and data.manifest["split"] == "validation"
    assert data.manifest["dataset"] == "tar/tiny_imagenet200" and "CenterCrop" in data.manifest["transform"]
    assert [data[i]["index"] for i in range(6)] == list(range(6))


class _ThreadRecordingImages(SyntheticImages):
    """SyntheticImages that record on which thread each view is read."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.threads = set()

    def __getitem__(self, i: int) -> dict:
        import threading

        self.threads.add(threading.current_thread().name)
        return super().__getitem__(i)


@pytest.mark.parametrize("fast", [True, False], ids=["traced", "eager"])
def test_seeded_views_load_ahead_only_while_the_backbone_draws_no_random_numbers(model, tmp_path, fast):
    """A traced timm backbone draws no random numbers, so the views decode on the prefetch thread; an
    eager backbone (e.g. a custom, stochastic one) might, so they are read on the caller's thread,
    where the per-view seeding and the backbone's draws cannot interleave."""
    import threading

    data = _ThreadRecordingImages(8)
    path = build(model, data, tmp_path / "c.h5", epochs=1, batch_size=4, fast=fast)
    assert read(path)[1]["backbone_runtime"] == ("channels_last" if fast else "eager")
    assert ("uncertain_repr-prefetch" in data.threads) == fast  # (build also reads one item itself, first)
    assert data.threads <= {"uncertain_repr-prefetch", threading.current_thread().name}
