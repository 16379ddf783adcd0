"""Backbone embeddings computed once, read many times (HDF5 via h5py).

Training an uncertainty method on a frozen backbone only needs the backbone's embeddings, so
:func:`build` runs the backbone once per (augmented) view and writes, per row,

    embeddings [N, D] float32 (or float16), labels [N] int64, soft_labels [N, K] (if the set has them),
    indices [N] int64 (the sample's dataset index), epochs [N] int64 (which augmented view)

plus a JSON manifest (backbone name and weight hash, transform, dataset, library version).
:class:`CachedEmbeddings` reads one file or all rank shards as a single map-style dataset whose
items feed ``model(embedding=item["embedding"])``, which never touches the backbone.

Writes are resumable and atomic: rows go to ``<path>.partial`` chunk by chunk, the number of
finished rows is recorded in ``<path>.partial.progress.json`` (one in-place write) after each
chunk is flushed, and only a complete file is renamed to ``path``. Augmentations are seeded per
sample from ``(seed, epoch, index)``, so a resumed build writes exactly the rows of an
uninterrupted one, and the rows do not depend on the batch size, worker count or rank count.
One build at a time writes a file: ``<path>.lock`` is held (``flock``) for the whole build and a
second one is refused. A failed write (e.g. a full disk) removes the unfinished file. Rerunning a
finished build with the same settings returns the file as it is, so a torchrun command whose
ranks partly finished can simply be rerun. The reader presents the rows of all shards sorted by
``(epoch, index)``, so a cache reads the same whatever the number of processes that wrote it.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import glob
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._locks import exclusive_lock
from .version import __version__

FORMAT_VERSION = 1
# Manifest fields that must agree between a cache and the model/transform that uses it.
_MODEL_FIELDS = ("backbone", "backbone_sha256", "embed_dim")
# Manifest fields that must agree between the shards of one cache (everything but the rank).
_SHARD_FIELDS = (
    "format_version", "backbone", "backbone_sha256", "embed_dim", "transform", "augment", "dataset",
    "split", "dataset_length", "epochs", "seed", "dtype", "amp", "num_soft_labels", "world_size",
)
_PROGRESS_BYTES = 64  # fixed size of the progress record, rewritten in place
_SHARD_NAME = re.compile(r"^(?P<stem>.+)\.rank(?P<rank>\d+)-of-(?P<world>\d+)\.h5$")

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------- manifest
def backbone_fingerprint(model: nn.Module) -> str:
    """sha256 over the backbone's state dict (names, dtypes, shapes, bytes; in key order).

    For an ``Uncertainizer`` the classifier is left out: embeddings do not depend on it.
    """
    backbone = getattr(model, "backbone", model)
    classifier = getattr(model, "classifier", None)
    skip = set() if classifier is None else {id(t) for t in classifier.state_dict(keep_vars=True).values()}
    digest = hashlib.sha256()
    for name, tensor in backbone.state_dict(keep_vars=True).items():
        if id(tensor) in skip:
            continue
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _backbone_name(model: nn.Module) -> str:
    return getattr(model, "backbone_name", None) or type(getattr(model, "backbone", model)).__name__


def model_manifest(model: nn.Module) -> Dict[str, Any]:
    """The manifest fields that identify the embeddings ``model`` produces."""
    embed_dim = getattr(model, "embed_dim", None)
    return {
        "backbone": _backbone_name(model),
        "backbone_sha256": backbone_fingerprint(model),
        "embed_dim": None if embed_dim is None else int(embed_dim),
    }


def _mismatches(manifest: Mapping[str, Any], expected: Mapping[str, Any]) -> List[str]:
    return [f"{k}: cache has {manifest.get(k)!r}, expected {v!r}" for k, v in expected.items() if manifest.get(k) != v]


def check_compatible(
    cache: Union["CachedEmbeddings", Mapping[str, Any]], model: nn.Module, transform: Optional[Callable] = None
) -> None:
    """Raise ``ValueError`` naming every manifest field that differs from ``model`` (and ``transform``).

    Compared: the backbone name, the hash of its weights and the embedding width; with
    ``transform`` also ``repr(transform)`` against the transform the cache was built with.
    """
    manifest = cache.manifest if isinstance(cache, CachedEmbeddings) else cache
    expected = model_manifest(model)
    if transform is not None:
        expected["transform"] = repr(transform)
    bad = _mismatches(manifest, expected)
    if bad:
        raise ValueError("the embedding cache was built for another backbone or transform: " + "; ".join(bad))


# ----------------------------------------------------------------------------- paths
def shard_path(path: PathLike, rank: int, world_size: int) -> Path:
    """File of rank ``rank``'s shard: ``path`` itself for one process, else ``<stem>.rank{r}-of-{w}.h5``."""
    path = Path(path)
    if world_size == 1:
        return path
    stem = path.name[: -len(".h5")] if path.name.endswith(".h5") else path.name
    return path.with_name(f"{stem}.rank{rank}-of-{world_size}.h5")


def _find_shards(path: Path) -> List[Path]:
    stem = path.name[: -len(".h5")] if path.name.endswith(".h5") else path.name
    found: Dict[int, Dict[int, Path]] = {}
    for candidate in path.parent.glob(f"{glob.escape(stem)}.rank*-of-*.h5") if path.parent.is_dir() else []:
        match = _SHARD_NAME.match(candidate.name)
        if match and match["stem"] == stem:
            found.setdefault(int(match["world"]), {})[int(match["rank"])] = candidate
    if path.is_file():
        if found:  # two builds of one name: which is current cannot be told from here
            shards = sorted(p.name for ranks in found.values() for p in ranks.values())
            raise ValueError(f"embedding cache {path} and rank shards {shards} of the same name both exist; "
                             "remove the stale one(s)")
        return [path]
    if not found:
        raise FileNotFoundError(f"no embedding cache at {path} (nor shards {stem}.rank*-of-*.h5 next to it)")
    if len(found) > 1:
        raise ValueError(f"shards of different world sizes {sorted(found)} next to {path}; remove the stale ones")
    (world, shards), = found.items()
    missing = sorted(set(range(world)) - set(shards))
    if missing:
        raise ValueError(f"embedding cache {path} is incomplete: shards for ranks {missing} of {world} are missing")
    return [shards[r] for r in range(world)]


def _write_progress(path: Path, rows: int) -> None:
    """Record ``rows`` finished rows: one fixed-size write at offset 0, so after the first one it needs
    no new disk space (a full disk cannot stop it) and a kill cannot leave half a record."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"rows": rows}).ljust(_PROGRESS_BYTES).encode())
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- writer
def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class _SeededViews(Dataset):
    """``dataset[index]`` with all RNGs seeded from ``(seed, epoch, index)``; keys are ``(epoch, index)``.

    The caller's RNG states (torch CPU, ``random``, numpy) are restored after each item.
    """

    def __init__(self, dataset: Dataset, seed: int, augment: bool) -> None:
        self.dataset, self.seed, self.augment = dataset, seed, augment

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, Any]:
        epoch, index = key
        if not self.augment:
            return self.dataset[index]
        sample_seed = _sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed)
                random.seed(sample_seed)
                np.random.seed(sample_seed)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class _Keys(torch.utils.data.Sampler):
    def __init__(self, keys: Sequence[Tuple[int, int]]) -> None:
        self.keys = keys

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def _dist_rank_world() -> Tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _read_progress(progress_file: Path) -> int:
    if not progress_file.exists():
        return 0
    return int(json.loads(progress_file.read_text())["rows"])


@torch.no_grad()
def build(
    model: nn.Module,
    dataset: Dataset,
    path: PathLike,
    *,
    epochs: int = 1,
    augment: bool = True,
    batch_size: int = 256,
    num_workers: int = 0,
    seed: int = 0,
    dtype: str = "float32",
    chunk_size: int = 4096,
    amp: bool = False,
    device: Union[str, torch.device, None] = None,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    dataset_name: Optional[str] = None,
    split: Optional[str] = None,
    progress: Optional[bool] = None,
    on_chunk: Optional[Callable[[int], None]] = None,
    fast: bool = True,
) -> Path:
    """Write the embeddings of ``epochs`` views of ``dataset`` to ``path`` (HDF5); returns the file written.

    Args:
        model: an ``Uncertainizer`` (or any module with ``forward_embedding``): images [B, C, H, W]
            -> embeddings [B, D]. Run in eval mode without gradients.
        dataset: map-style, items ``{"image": [C, H, W], "label": int, "index": int}`` (+ ``"soft_labels"``
            [K]), with the transform already inside (a random one when ``augment``).
        path: the ``.h5`` file. Under ``torch.distributed`` (or with ``rank``/``world_size``) each rank
            writes its shard ``<stem>.rank{r}-of-{w}.h5`` of samples ``rank::world_size``.
        epochs: number of augmented views of every sample (must be 1 without ``augment``).
        augment: the dataset's transform is random; each view is seeded from ``(seed, epoch, index)``.
        dtype: ``"float32"`` or ``"float16"`` for the stored embeddings.
        chunk_size: rows per write, flush and progress record (also the HDF5 chunk height).
        amp: fp16 autocast on CUDA (recorded in the manifest; embeddings differ slightly).
        dataset_name: recorded in the manifest (default: ``dataset.name`` if it has one, else its
            class name).
        split: recorded in the manifest (default: ``dataset.split`` if it has one, else ``None``).
        progress: tqdm bar (default: only on a TTY and rank 0).
        on_chunk: called with the number of finished rows after each chunk (e.g. for monitoring).
        fast: run the backbone through :func:`uncertain_repr.inference.frozen_inference` (same
            embeddings up to 1e-4, faster on CPU); the manifest's ``backbone_runtime`` records what ran.

    An interrupted build resumes from the last complete chunk when called again with the same
    arguments; ``ValueError`` if the unfinished file was started with different ones.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not augment and epochs != 1:
        raise ValueError(f"epochs={epochs} without augment would write identical copies; use epochs=1")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither (then torch.distributed decides)")
    if rank is None:
        rank, world_size = _dist_rank_world()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if not callable(getattr(model, "forward_embedding", None)):
        raise TypeError("model must have forward_embedding(images) -> [B, D] (e.g. an Uncertainizer)")

    n = len(dataset)
    if n == 0:
        raise ValueError("dataset is empty")
    first = _SeededViews(dataset, seed, augment)[(0, 0)]
    if not isinstance(first, Mapping) or "image" not in first or "label" not in first:
        raise TypeError("dataset items must be dicts with 'image', 'label' and 'index' (see uncertain_repr.data)")
    num_soft = int(len(first["soft_labels"])) if "soft_labels" in first else 0
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)

    manifest = {
        "format_version": FORMAT_VERSION,
        **model_manifest(model),
        "transform": repr(getattr(dataset, "transform", None)),
        "augment": bool(augment),
        "dataset": dataset_name or getattr(dataset, "name", None) or type(dataset).__name__,
        "split": split if split is not None else getattr(dataset, "split", None),
        "dataset_length": n,
        "epochs": int(epochs),
        "seed": int(seed),
        "dtype": dtype,
        "amp": bool(amp and device.type == "cuda"),
        "num_soft_labels": num_soft,
        "library_version": __version__,
        "rank": rank,
        "world_size": world_size,
    }
    final = shard_path(path, rank, world_size)
    final.parent.mkdir(parents=True, exist_ok=True)
    keys = [(e, i) for e in range(epochs) for i in range(rank, n, world_size)]
    # One writer per file: a second build of the same output is refused while this one runs
    # (independent of HDF5's own file locking, which is often off on network file systems).
    with exclusive_lock(final.with_name(final.name + ".lock"), f"the embedding cache {final}"):
        if final.exists():
            return _finished(final, manifest)
        return _write(model, dataset, final, manifest, keys, batch_size=batch_size, num_workers=num_workers,
                      chunk_size=chunk_size, device=device, progress=progress, on_chunk=on_chunk, fast=fast)


def _finished(final: Path, manifest: Mapping[str, Any]) -> Path:
    """``final`` if it was built with the same settings (rerunning a finished build is a no-op), else
    ``FileExistsError`` naming the differences."""
    existing = _read_manifest(final)
    bad = _mismatches(existing, {k: v for k, v in manifest.items() if k != "library_version"})
    if bad:
        raise FileExistsError(f"{final} already exists and was built with other settings ({'; '.join(bad)}); "
                              "delete it or choose another path")
    return final


def _write(
    model: nn.Module, dataset: Dataset, final: Path, manifest: Mapping[str, Any], keys: Sequence[Tuple[int, int]],
    *, batch_size: int, num_workers: int, chunk_size: int, device: torch.device, progress: Optional[bool],
    on_chunk: Optional[Callable[[int], None]], fast: bool,
) -> Path:
    """Write (or resume) the rows ``keys`` of one shard; the caller holds the shard's lock."""
    import h5py
    from tqdm.auto import tqdm

    seed, augment, dtype, rank = manifest["seed"], manifest["augment"], manifest["dtype"], manifest["rank"]
    num_soft = manifest["num_soft_labels"]
    partial = final.with_name(final.name + ".partial")
    progress_file = final.with_name(final.name + ".partial.progress.json")
    total, width = len(keys), int(manifest["embed_dim"])

    done = _read_progress(progress_file) if partial.exists() else 0
    if partial.exists() and done > 0:
        try:
            handle = h5py.File(partial, "r+")
        except OSError as err:
            raise ValueError(f"unfinished cache {partial} cannot be reopened (killed while writing?): {err}; "
                             "delete it to start over") from None
        bad = _mismatches(json.loads(handle.attrs["manifest"]), {k: v for k, v in manifest.items()
                                                                  if k != "library_version"})
        if bad:
            handle.close()
            raise ValueError(f"unfinished cache {partial} was started with other settings ({'; '.join(bad)}); "
                             "delete it to start over")
        try:
            _reserve_space(partial, handle.id.get_filesize())
        except OSError:
            handle.close()
            raise
    else:
        # Nothing of it is recorded as finished, and we hold the lock: a leftover of a killed build.
        partial.unlink(missing_ok=True)
        # created exclusively, and its disk space reserved before HDF5 writes anything into it
        _reserve_space(partial, total * (width * np.dtype(dtype).itemsize + 3 * 8 + num_soft * 4), create=True)
        handle = h5py.File(partial, "w")  # our own reserved file (we hold the lock)
        rows = min(chunk_size, total)
        try:
            handle.attrs["manifest"] = json.dumps(manifest)
            handle.create_dataset("embeddings", (total, width), dtype=dtype, chunks=(rows, width), **_preallocated())
            handle.create_dataset("labels", (total,), dtype="int64", chunks=(rows,), **_preallocated())
            handle.create_dataset("indices", data=np.array([i for _, i in keys], dtype=np.int64))
            handle.create_dataset("epochs", data=np.array([e for e, _ in keys], dtype=np.int64))
            if num_soft:
                handle.create_dataset("soft_labels", (total, num_soft), dtype="float32", chunks=(rows, num_soft),
                                      **_preallocated())
            _reserve_space(partial, handle.id.get_filesize())
            handle.flush()
            _write_progress(progress_file, 0)
        except (OSError, RuntimeError) as err:
            raise _abandon(handle, partial, progress_file, err) from None

    was_training = model.training
    model.eval()
    from ._prefetch import load_ahead
    from .inference import EAGER, frozen_inference

    # decided on all rows, not the rows left: a resumed build runs (and records) what its first part ran
    runner = frozen_inference(model, enabled=fast and not manifest["amp"], num_images=len(keys))
    loader = DataLoader(
        _SeededViews(dataset, seed, augment), batch_size=batch_size, sampler=_Keys(keys[done:]),
        num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
    )
    bar = tqdm(total=total, initial=done, desc=f"caching {final.name}", unit="img",
               disable=None if (progress is None and rank == 0) else not progress)
    buffer: Dict[str, List[np.ndarray]] = {"embeddings": [], "labels": [], "soft_labels": []}
    pending = 0

    def flush() -> None:
        nonlocal done, pending
        if not pending:
            return
        try:
            handle["embeddings"][done: done + pending] = np.concatenate(buffer["embeddings"]).astype(dtype)
            handle["labels"][done: done + pending] = np.concatenate(buffer["labels"])
            if num_soft:
                handle["soft_labels"][done: done + pending] = np.concatenate(buffer["soft_labels"])
            handle.flush()
        except (OSError, RuntimeError) as err:  # an I/O error: the file's state is unknown from here on
            raise _abandon(handle, partial, progress_file, err) from None
        done, pending = done + pending, 0
        for parts in buffer.values():
            parts.clear()
        _write_progress(progress_file, done)
        if on_chunk is not None:
            on_chunk(done)

    try:
        position = done
        # The next batch decodes on a thread while this one runs. Not for an eager (e.g. custom)
        # backbone on seeded views: its random draws would interleave with the per-view seeding.
        same_thread = augment and runner.runtime == EAGER
        with (contextlib.nullcontext(loader) if same_thread else load_ahead(loader)) as batches:
            for batch in batches:
                count = len(batch["label"])
                expected_index = [i for _, i in keys[position: position + count]]
                if batch["index"].tolist() != expected_index:
                    raise ValueError("dataset item 'index' must equal the index it was read at")
                position += count
                with torch.autocast(device.type, dtype=torch.float16, enabled=manifest["amp"]):
                    emb = runner.embed(batch["image"].to(device))
                buffer["embeddings"].append(emb.float().cpu().numpy())
                buffer["labels"].append(batch["label"].numpy().astype(np.int64))
                if num_soft:
                    buffer["soft_labels"].append(batch["soft_labels"].float().numpy())
                pending += count
                bar.update(count)
                if pending >= chunk_size:
                    flush()
        flush()
        try:
            handle.attrs["manifest"] = json.dumps({**manifest, "backbone_runtime": runner.runtime})
            handle.close()
            os.truncate(partial, partial.stat().st_size)  # give back the reserved blocks past its end
            _fsync(partial)
        except (OSError, RuntimeError) as err:
            raise _abandon(handle, partial, progress_file, err) from None
    finally:
        handle.close()
        bar.close()
        model.train(was_training)
    os.replace(partial, final)
    progress_file.unlink(missing_ok=True)
    return final


def _preallocated() -> Dict[str, Any]:
    """``create_dataset`` options: every chunk gets its place in the file at once, without fill writes
    (:func:`_reserve_space` then reserves those places on disk)."""
    import h5py

    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return {"dcpl": dcpl, "fill_time": "never"}


def _reserve_space(partial: Path, size: int, *, create: bool = False) -> None:
    """Reserve the disk blocks of ``partial`` up to ``size`` bytes plus room for HDF5's metadata
    (``fallocate``, the file's length unchanged): a disk that fills up while the build runs then
    never fails an HDF5 write (after which HDF5 can crash the process). ``OSError`` naming the
    cache if it does not fit; with ``create``, ``partial`` is created exclusively here and removed
    again on failure."""
    needed = size + size // 50 + (64 << 10)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | (os.O_EXCL if create else 0), 0o666)
    try:
        try:
            _fallocate_keep_size(fd, needed)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            # this file system cannot reserve: at least check that the space is there now
            if shutil.disk_usage(partial.parent).free < needed - os.fstat(fd).st_blocks * 512:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
    except OSError as err:
        if create:
            partial.unlink(missing_ok=True)
        name = partial.name[: -len(".partial")]
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(err.errno, f"reserving disk space for the embedding cache {name} failed: {err}") from None
        raise OSError(err.errno, f"not enough free space for the embedding cache {name} in {partial.parent}: "
                                 f"it needs about {needed / 2**20:.1f} MiB "
                                 f"({shutil.disk_usage(partial.parent).free / 2**20:.1f} MiB free)") from None
    finally:
        os.close(fd)


def _fallocate_keep_size(fd: int, size: int) -> None:
    """Linux ``fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size)``: reserve the blocks without changing the
    file's length. ``OSError`` (EOPNOTSUPP where the system or file system has no such call)."""
    import ctypes

    function = getattr(ctypes.CDLL(None, use_errno=True), "fallocate", None)
    if function is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate is not available")
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if function(fd, 1, 0, size) != 0:  # 1 = FALLOC_FL_KEEP_SIZE
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _fsync(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _abandon(handle: Any, partial: Path, progress_file: Path, err: Exception) -> OSError:
    """After a failed write (full disk, I/O error) nothing in ``partial`` can be trusted: close it,
    remove it and its progress record (freeing the space), and return the ``OSError`` to raise.

    ``err`` is an ``OSError``, or the ``RuntimeError`` h5py raises for a failed flush (errno in its text).
    """
    with contextlib.suppress(Exception):
        handle.close()
    partial.unlink(missing_ok=True)
    progress_file.unlink(missing_ok=True)
    code = getattr(err, "errno", None)
    found = re.search(r"errno = (\d+)", str(err))
    code = code or (int(found[1]) if found else errno.EIO)
    reason = str(err).splitlines()[0] if isinstance(err, OSError) else os.strerror(code)
    return OSError(code, f"writing the embedding cache {partial} failed: {reason}; the unfinished file was "
                         "removed, rerun the same command once the problem is fixed")


# ----------------------------------------------------------------------------- reader
_COLUMNS = ("embeddings", "labels", "indices", "epochs")


def _open_h5(file: Path) -> Any:
    """``h5py.File(file, "r")``; ``ValueError`` naming the file if it is truncated or not HDF5."""
    import h5py

    try:
        return h5py.File(file, "r")
    except OSError as err:
        raise ValueError(f"{file} is not a readable embedding cache (truncated or corrupt?): {err}") from None


def _manifest_of(handle: Any, file: Path) -> Dict[str, Any]:
    try:
        return json.loads(handle.attrs["manifest"])
    except (KeyError, ValueError):
        raise ValueError(f"{file} has no readable manifest: it was not written by uncertain_repr.cache.build") from None


def _read_manifest(file: Path) -> Dict[str, Any]:
    with _open_h5(file) as handle:
        _checked_length(handle, file)
        return _manifest_of(handle, file)


def _checked_length(handle: Any, file: Path) -> int:
    """Number of rows; ``ValueError`` naming the file unless every column has it (and the manifest's width)."""
    missing = [name for name in _COLUMNS if name not in handle]
    if missing:
        raise ValueError(f"embedding cache {file} lacks the column(s) {', '.join(missing)}")
    lengths = {name: int(handle[name].shape[0]) for name in (*_COLUMNS, "soft_labels") if name in handle}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"embedding cache {file} is inconsistent: its columns have different lengths {lengths}")
    width = _manifest_of(handle, file).get("embed_dim")
    if handle["embeddings"].ndim != 2 or (width is not None and handle["embeddings"].shape[1] != width):
        raise ValueError(f"embedding cache {file}: embeddings of shape {handle['embeddings'].shape}, "
                         f"the manifest says width {width}")
    return lengths["labels"]


class CachedEmbeddings(Dataset):
    """All shards of an embedding cache as one map-style dataset.

    Items: ``{"embedding": FloatTensor[D], "label": int, "index": int, "epoch": int}`` plus
    ``"soft_labels": FloatTensor[K]`` when the cache has them. HDF5 files are opened lazily in
    each process (never inherited across a fork); ``in_memory=True`` reads everything once.

    Args:
        path: the ``.h5`` file given to :func:`build`, or that name when rank shards were written.
        expect: a model; ``ValueError`` (naming the fields) if the cache was built for another backbone.
        transform: with ``expect``, also require the cache to have been built with this transform.
        in_memory: load all rows into RAM at construction (fast random access for small caches).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        expect: Optional[nn.Module] = None,
        transform: Optional[Callable] = None,
        in_memory: bool = False,
    ) -> None:
        self.path = Path(path)
        self.files = _find_shards(self.path)
        manifests, lengths, keys = [], [], []
        for file in self.files:
            with _open_h5(file) as handle:
                manifests.append(_manifest_of(handle, file))
                lengths.append(_checked_length(handle, file))
                if len(self.files) > 1:
                    keys.append((handle["epochs"][()], handle["indices"][()]))
        for file, manifest in zip(self.files[1:], manifests[1:]):
            bad = _mismatches(manifest, {k: manifests[0].get(k) for k in _SHARD_FIELDS})
            if bad:
                raise ValueError(f"shard {file.name} does not match {self.files[0].name}: {'; '.join(bad)}")
        if [m["rank"] for m in manifests] != list(range(len(self.files))):
            raise ValueError(f"shard files and the ranks in their manifests disagree: {[m['rank'] for m in manifests]}")
        self.manifest: Dict[str, Any] = {k: v for k, v in manifests[0].items() if k != "rank"}
        self._offsets = np.cumsum([0] + lengths).tolist()
        # Rows in one canonical order, by (epoch, index), whatever the number of shards: a cache
        # written by any number of processes reads (and so trains) like a single-process one.
        self._order: Optional[np.ndarray] = None
        if keys:
            epochs, indices = (np.concatenate(column) for column in zip(*keys))
            self._order = np.lexsort((indices, epochs))
            same = (np.diff(epochs[self._order]) == 0) & (np.diff(indices[self._order]) == 0)
            if same.any():
                raise ValueError(f"embedding cache {self.path}: its shards hold {int(same.sum())} duplicate "
                                 "(epoch, index) rows; rebuild it")
        self._handles: Dict[int, Any] = {}
        self._pid: Optional[int] = None
        self._arrays: Optional[List[Dict[str, np.ndarray]]] = None
        if expect is not None:
            check_compatible(self, expect, transform)
        elif transform is not None:
            raise TypeError("transform= is only checked together with expect=model")
        if in_memory:
            self._arrays = []
            for file in self.files:
                with _open_h5(file) as handle:
                    self._arrays.append({name: handle[name][()] for name in self._columns(handle)})

    @property
    def embed_dim(self) -> int:
        """Width ``D`` of the stored embeddings."""
        return int(self.manifest["embed_dim"])

    @staticmethod
    def _columns(handle: Any) -> List[str]:
        return [name for name in ("embeddings", "labels", "indices", "epochs", "soft_labels") if name in handle]

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, None
        return state

    def _shard(self, shard: int) -> Any:
        if self._arrays is not None:
            return self._arrays[shard]
        if self._pid != os.getpid():  # first use in this process (e.g. a forked DataLoader worker)
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            self._handles[shard] = _open_h5(self.files[shard])
        return self._handles[shard]

    def _locate(self, index: int) -> Tuple[int, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} cached rows")
        index %= len(self)
        if self._order is not None:
            index = int(self._order[index])
        shard = bisect.bisect_right(self._offsets, index) - 1
        return shard, index - self._offsets[shard]

    @staticmethod
    def _item(columns: Mapping[str, Any], k: int) -> Dict[str, Any]:
        item = {
            "embedding": torch.from_numpy(np.asarray(columns["embeddings"][k], dtype=np.float32)),
            "label": int(columns["labels"][k]),
            "index": int(columns["indices"][k]),
            "epoch": int(columns["epochs"][k]),
        }
        if "soft_labels" in columns:
            item["soft_labels"] = torch.from_numpy(np.asarray(columns["soft_labels"][k], dtype=np.float32))
        return item

    def __getitem__(self, index: int) -> Dict[str, Any]:
        shard, row = self._locate(int(index))
        data = self._shard(shard)
        return self._item({name: data[name] for name in self._columns(data)}, row)

    def __getitems__(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
        """Batched read (used by ``DataLoader``): one sorted HDF5 read per shard and column."""
        located = [self._locate(int(i)) for i in indices]
        items: List[Optional[Dict[str, Any]]] = [None] * len(located)
        for shard in sorted({s for s, _ in located}):
            positions = [p for p, (s, _) in enumerate(located) if s == shard]
            rows = np.array([located[p][1] for p in positions])
            unique, inverse = np.unique(rows, return_inverse=True)
            data = self._shard(shard)
            columns = {name: data[name][unique] for name in self._columns(data)}
            for p, k in zip(positions, inverse):
                items[p] = self._item(columns, int(k))
        return items  # type: ignore[return-value]

    def close(self) -> None:
        """Close the HDF5 handles opened by this process."""
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __repr__(self) -> str:
        m = self.manifest
        return (f"CachedEmbeddings({str(self.path)!r}, rows={len(self)}, shards={len(self.files)}, "
                f"backbone={m['backbone']!r}, dataset={m['dataset']!r}, split={m['split']!r}, epochs={m['epochs']})")
